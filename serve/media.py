"""The indexed videos' files, kept so the search page can play them and show the matching frame.

Files are stored under the media directory as ``<canonical video id><suffix>``, one per id, the
suffix chosen by the server from the container's signature, never from the client's file name:
a video uploaded as ``x.html`` is stored and served as a video (with ``nosniff``), so it can never
run as a page from this origin. On a cluster the directory must be storage every ingress replica
sees, like the staging directory. Thumbnails are decoded on request from the stored file.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from adaclip.index.base import canonical_id
from adaclip.video.decode import decode_frames_chunked
from adaclip.video.probe import probe_video
from serve.upload import remove_stale

THUMBNAIL_SIZE = 256
PART_PREFIX, PART_SUFFIX = "media-", ".part"
# suffix -> the only Content-Type a stored file is served with
MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".ts": "video/mp2t",
    ".video": "application/octet-stream",
}


def container_suffix(path: str | Path) -> str:
    """The stored suffix for a file, from its first bytes: ISO BMFF (mp4, mov), EBML (WebM when its
    doctype says so, else Matroska), RIFF AVI, MPEG-TS; anything else `.video` (served as bytes)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm" if b"webm" in head[:64] else ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return ".ts"
    return ".video"


class MediaStore:
    """Video files by id: keep after the index accepted the point, find for playback, remove on delete."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale(self.root, prefix=PART_PREFIX, suffix=PART_SUFFIX)  # left by a crashed process

    def find(self, video_id: str) -> Path | None:
        """The stored file of `video_id` in any spelling of the UUID, or None."""
        vid = canonical_id(video_id)
        if vid is None:
            return None
        return next((p for p in sorted(self.root.glob(f"{vid}.*")) if p.suffix in MEDIA_TYPES), None)

    def keep(self, video_id: str, source: str | Path) -> Path:
        """Copy `source` in atomically as the one file of `video_id` (kept if already there)."""
        vid = canonical_id(video_id)
        if vid is None:
            raise ValueError(f"not a video id: {video_id!r}")
        existing = self.find(vid)
        if existing is not None:
            return existing
        target = self.root / f"{vid}{container_suffix(source)}"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=PART_PREFIX, suffix=PART_SUFFIX)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def remove(self, video_id: str) -> None:
        path = self.find(video_id)
        if path is not None:
            path.unlink(missing_ok=True)


def thumbnail_png(path: str | Path, seconds: float, size: int = THUMBNAIL_SIZE) -> bytes:
    """The frame nearest `seconds` of the video at `path`, as a square PNG of side `size`."""
    info = probe_video(path)
    index = int(np.clip(round(seconds * info.fps), 0, max(0, info.num_frames - 1)))
    frame = next(decode_frames_chunked(path, [index], size))[0]  # (size, size, 3) uint8
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()
