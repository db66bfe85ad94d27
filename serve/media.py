"""The indexed videos' files, kept so the search page can play them and show the matching frame.

Files are stored under the media directory as ``<video id><suffix>`` (one copy per content hash
and model version); on a cluster that directory must be storage every ingress replica sees, like
the staging directory. Thumbnails are decoded on request from the stored file.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from adaclip.video.decode import decode_frames_chunked
from adaclip.video.probe import probe_video

THUMBNAIL_SIZE = 256


class MediaStore:
    """Video files by id: keep after a successful ingest, find for playback, remove on delete."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def find(self, video_id: str) -> Path | None:
        """The stored file of `video_id`, or None (ids are UUIDs: nothing to escape)."""
        if not video_id.replace("-", "").isalnum():
            return None
        return next(iter(sorted(self.root.glob(f"{video_id}.*"))), None)

    def keep(self, video_id: str, source: str | Path, name: str) -> Path:
        """Copy `source` in atomically, keeping the suffix of its original `name` for the browser."""
        suffix = Path(name).suffix.lower() if Path(name).suffix.isascii() else ""
        target = self.root / f"{video_id}{suffix or '.mp4'}"
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
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
