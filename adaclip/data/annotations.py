"""Annotation readers: one ``VideoRecord`` per video, whatever the dataset's file format.

Formats (``DataConfig.dataset``):

- ``jsonl``: one JSON object per line, ``{"video": path, "captions": [...], "split": "train"|"val"|
  "test", "id"?: str, "title"?: str, "timestamps"?: [[start, end], ...]}``; a relative ``video``
  path is resolved against ``DataConfig.video_root``. ``id`` defaults to the file name's stem.
- ``msrvtt``, ``didemo``, ``activitynet``: AdaCLIP's annotation JSON (its ``annots/<dataset>/``
  files): a mapping ``video id -> {"sentences": [...], "timestamps"?: [[s, e], ...],
  "extension"?: ".mp4", "duration"?: seconds}`` (a bare list of sentences is accepted too), one file
  per split. See ``adaclip.data.adaclip_json`` for the file names looked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from adaclip.config import DataConfig
from adaclip.data.adaclip_json import read_adaclip_json
from adaclip.data.records import VideoRecord, parse_captions, parse_timestamps
from adaclip.errors import DataError

__all__ = ["CaptionMode", "VideoRecord", "caption_table", "captions_for_training", "read_annotations"]

CaptionMode = Literal["concat", "random", "all"]


def _read_jsonl(path: Path, video_root: Path, split: str) -> list[VideoRecord]:
    if not path.is_file():
        raise DataError(
            f"annotation file {path} does not exist; write one with `adaclip synth` or fix data.annotations"
        )
    records, seen, splits = [], set(), set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for key in ("video", "captions", "split"):
                if key not in row:
                    raise DataError(f"{where}: missing key {key!r} (need video, captions, split)")
            if not isinstance(row["video"], str) or not row["video"]:
                raise DataError(f"{where}: 'video' must be a non-empty path string, got {row['video']!r:.80}")
            row_split = str(row["split"])
            splits.add(row_split)
            video = Path(row["video"])
            video_id = str(row.get("id") or video.stem)
            if video_id in seen:
                raise DataError(f"{where}: duplicate video id {video_id!r}")
            seen.add(video_id)
            captions = parse_captions(row["captions"], where)
            timestamps = parse_timestamps(row.get("timestamps"), where)
            if row_split != split:
                continue
            path_ = video if video.is_absolute() else video_root / video
            title = None if row.get("title") is None else str(row["title"])
            records.append(VideoRecord(video_id, path_, captions, row_split, timestamps, title))
    if not records:
        raise DataError(f"{path}: no videos in split {split!r}; splits present: {sorted(splits) or 'none'}")
    return records


def read_annotations(cfg: DataConfig, split: str) -> list[VideoRecord]:
    """Every video of ``split`` (e.g. cfg.train_split) in the dataset named by ``cfg.dataset``.

    Raises DataError naming the file and line or key for malformed input, or an empty split.
    """
    if cfg.dataset == "jsonl":
        return _read_jsonl(Path(cfg.annotations), Path(cfg.video_root), split)
    return read_adaclip_json(cfg.dataset, Path(cfg.annotations), Path(cfg.video_root), split)


def captions_for_training(captions: list[str], mode: CaptionMode, rng: np.random.Generator) -> list[str]:
    """The training texts of one video for an epoch (SPEC section 5).

    concat: one paragraph of all captions joined with spaces (DiDeMo, ActivityNet);
    random: one caption drawn at random (MSR-VTT); all: every caption as its own sample.
    """
    if not captions:
        raise DataError("a video has no captions; every record needs at least one")
    if mode == "concat":
        return [" ".join(captions)]
    if mode == "random":
        return [captions[int(rng.integers(len(captions)))]]
    if mode == "all":
        return list(captions)
    raise ValueError(f"unknown caption mode {mode!r}; expected 'concat', 'random' or 'all'")


def caption_table(records: list[VideoRecord], mode: CaptionMode) -> tuple[list[str], list[int]]:
    """The evaluation queries: ``texts[i]`` belongs to video ``caption_to_video[i]``.

    ``concat`` (DiDeMo, ActivityNet) is paragraph retrieval as AdaCLIP evaluates it: one query per
    video, its captions joined as in training. ``random`` and ``all`` score every caption as its own
    query. ``caption_to_video`` indexes ``records`` (the columns of a (queries, videos) matrix).
    """
    texts: list[str] = []
    caption_to_video: list[int] = []
    for column, record in enumerate(records):
        queries = [" ".join(record.captions)] if mode == "concat" else record.captions
        texts.extend(queries)
        caption_to_video.extend([column] * len(queries))
    return texts, caption_to_video
