"""Move an index to a new model: re-encode every stored video from its kept file into the new
model's collection (`adaclip reindex`; the service runs it, see serve/index_service.py).

A video's id names its model (UUID5 of content hash and model version), so the new collection
gets new ids; a live stream keeps its own id. Passes are idempotent: a video already in the new
collection is skipped, so an interrupted reindex resumes, and a second pass catches videos added
to the old collection during the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaclip.config import Config
from adaclip.encoding import (
    KEY_CONTENT_HASH,
    KEY_METADATA,
    decode_windows_for_model,
    encode_decoded,
    to_indexed,
)
from adaclip.errors import VideoDecodeError
from adaclip.index import KEY_SOURCE, KEY_TITLE, VideoIndex, video_id
from adaclip.models import AdaCLIP

MediaFinder = Callable[[str, dict[str, Any]], Path | None]  # (old id, payload) -> the kept file


@dataclass
class ReindexReport:
    """What a pass did: re-encoded, already present, and videos it could not re-encode (old id ->
    why: no kept file, or the file no longer decodes)."""

    copied: int = 0
    present: int = 0
    missing: dict[str, str] = field(default_factory=dict)
    moved: dict[str, str] = field(default_factory=dict)  # old id -> new id, of every video seen


def new_video_id(old_id: str, payload: dict[str, Any], old_version: str, new_version: str) -> str:
    """The video's id under the new model: from its content hash as uploads make it, or its own id
    when it is not a content id (a live stream's)."""
    content = payload.get(KEY_CONTENT_HASH)
    if content and old_id == video_id(content, old_version):
        return video_id(content, new_version)
    return old_id


def reindex_pass(
    old: VideoIndex, new: VideoIndex, model: AdaCLIP, cfg: Config, find_media: MediaFinder
) -> ReindexReport:
    """Re-encode every video of `old` missing from `new` with `model` (`cfg`: its resolved config,
    which also decides the windows), reading each from `find_media`."""
    report = ReindexReport()
    for old_id, payload in old.videos():
        new_id = new_video_id(old_id, payload, old.model_version, new.model_version)
        report.moved[old_id] = new_id
        if new.exists([new_id]):
            report.present += 1
            continue
        path = find_media(old_id, payload)
        if path is None or not payload.get(KEY_CONTENT_HASH):
            report.missing[old_id] = "no kept file" if path is None else "no content hash"
            continue
        try:
            decoded = decode_windows_for_model(path, cfg)
        except VideoDecodeError as e:
            report.missing[old_id] = e.reason
            continue
        windows = [
            to_indexed(
                w,
                payload[KEY_CONTENT_HASH],
                new.model_version,
                payload.get(KEY_SOURCE) or str(path),
                payload.get(KEY_TITLE),
                payload.get(KEY_METADATA),
                video=new_id,
            )
            for w in encode_decoded(model, decoded)
        ]
        new.insert(windows)
        report.copied += 1
    return report


def remove_deleted(new: VideoIndex, moved: dict[str, str]) -> list[str]:
    """Delete from `new` the videos that are not the new ids of `moved` (deleted from the old
    collection while a pass ran); their ids."""
    keep = set(moved.values())
    gone = [vid for vid, _ in new.videos() if vid not in keep]
    for vid in gone:
        new.delete(vid)
    return gone
