"""``VideoRecord``: one video and its captions, and the validators every annotation reader shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaclip.errors import DataError


@dataclass
class VideoRecord:
    """One video and its captions; ``timestamps`` (seconds) when the dataset has them."""

    video_id: str
    path: Path
    captions: list[str]
    split: str
    timestamps: list[tuple[float, float]] | None = None
    title: str | None = None


def parse_captions(value: object, where: str) -> list[str]:
    """A non-empty list of non-empty strings, else DataError naming ``where``."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: captions must be a non-empty list of strings, got {value!r:.80}")
    for caption in value:
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: every caption must be a non-empty string, got {caption!r:.80}")
    return [c.strip() for c in value]


def parse_timestamps(value: object, where: str) -> list[tuple[float, float]] | None:
    """``[[start, end], ...]`` in seconds (or None), else DataError naming ``where``."""
    if value is None:
        return None
    try:
        spans = [(float(start), float(end)) for start, end in value]  # type: ignore[union-attr]
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{where}: timestamps must be a list of [start, end] numbers, got {value!r:.80}"
        ) from e
    return spans
