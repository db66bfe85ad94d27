"""The indexed videos' files, kept so the search page can play them and show the matching frame.

Files are stored under the media directory as ``<canonical video id><suffix>``, one per id, the
suffix chosen by the server from the container's signature, never from the client's file name:
a video uploaded as ``x.html`` is stored and served as a video (with ``nosniff``), so it can never
run as a page from this origin. On a cluster the directory must be storage every ingress replica
sees, like the staging directory. Thumbnails are decoded on request from the stored file.

A file and its index point change together in two phases, so a crash at any moment leaves no point
without its file and no served file without its point: a new file is first copied to
``.pending/`` (a full disk fails here, before the index is touched), committed by a rename once the
index holds the point; a removed file is first moved to ``.pending/`` and deleted once the point is
gone. `reconcile` settles what a crash left in ``.pending/`` by asking the index.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from PIL import Image

from adaclip.index.base import canonical_id
from adaclip.video.decode import decode_frames_chunked
from adaclip.video.probe import probe_video
from serve.upload import disk_full_is_507, remove_stale

THUMBNAIL_SIZE = 256
PART_PREFIX, PART_SUFFIX = "media-", ".part"
PENDING_DIR = ".pending"
PENDING_GRACE_S = 900.0  # a pending file with no point is an upload still in flight until then
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
    """Video files by id, changed in two phases with the index (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.pending = self.root / PENDING_DIR
        self.pending.mkdir(parents=True, exist_ok=True)
        remove_stale(self.pending, prefix=PART_PREFIX, suffix=PART_SUFFIX)  # left by a crashed copy

    def find(self, video_id: str) -> Path | None:
        """The stored file of `video_id` in any spelling of the UUID, or None."""
        vid = canonical_id(video_id)
        if vid is None:
            return None
        return next((p for p in sorted(self.root.glob(f"{vid}.*")) if p.suffix in MEDIA_TYPES), None)

    def prepare(self, video_id: str, source: str | Path) -> Path:
        """Copy `source` into `.pending/` as a future file of `video_id`; UploadError 507 on a full
        disk, with nothing left behind. Nothing is served until `commit`."""
        vid = _canonical(video_id)
        target = self.pending / f"{vid}-{uuid.uuid4().hex}{container_suffix(source)}"
        fd, tmp = tempfile.mkstemp(dir=self.pending, prefix=PART_PREFIX, suffix=PART_SUFFIX)
        os.close(fd)
        try:
            with disk_full_is_507():
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def commit(self, pending: Path) -> Path:
        """Serve a prepared file: the one file of its id (a copy already there is kept)."""
        vid = _pending_id(pending)
        existing = self.find(vid)
        if existing is not None:
            pending.unlink(missing_ok=True)
            return existing
        target = self.root / f"{vid}{pending.suffix}"
        os.replace(pending, target)
        return target

    def discard(self, pending: Path | None) -> None:
        if pending is not None:
            pending.unlink(missing_ok=True)

    def withdraw(self, video_id: str) -> Path | None:
        """Stop serving `video_id`'s file, keeping it in `.pending/` until the point is gone
        (`discard`) or the removal failed (`commit` puts it back). None when there is no file."""
        path = self.find(video_id)
        if path is None:
            return None
        pending = self.pending / f"{path.stem}-{uuid.uuid4().hex}{path.suffix}"
        os.replace(path, pending)
        return pending

    def link(self, video_id: str, other_id: str) -> None:
        """Serve `video_id`'s file under `other_id` as well (the same video under a new model's
        id after a reindex): a hard link, a copy where links are not possible."""
        source, target_id = self.find(video_id), _canonical(other_id)
        if source is None or self.find(target_id) is not None:
            return
        target = self.root / f"{target_id}{source.suffix}"
        try:
            os.link(source, target)
        except OSError:
            self.commit(self.prepare(target_id, source))

    def unlink(self, video_id: str) -> None:
        """Stop serving `video_id`'s file under that name (its other names keep it)."""
        path = self.find(video_id)
        if path is not None:
            path.unlink(missing_ok=True)

    async def reconcile(self, is_indexed: Callable[[str], Awaitable[bool]]) -> tuple[int, int]:
        """Settle `.pending/` after a crash: a file whose point exists is committed; one without a
        point is deleted once older than PENDING_GRACE_S (younger ones may belong to an upload in
        flight on another replica). Returns (committed, deleted)."""
        committed = deleted = 0
        cutoff = time.time() - PENDING_GRACE_S
        for path in sorted(self.pending.glob("*")):
            if path.suffix not in MEDIA_TYPES:
                continue
            if await is_indexed(_pending_id(path)):
                self.commit(path)
                committed += 1
            elif path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
        return committed, deleted


def _pending_id(path: Path) -> str:
    """The video id of a `.pending/` file named `<id>-<random hex><suffix>`."""
    return "-".join(path.name.split("-", 5)[:5])


def _canonical(video_id: str) -> str:
    vid = canonical_id(video_id)
    if vid is None:
        raise ValueError(f"not a video id: {video_id!r}")
    return vid


def thumbnail_png(path: str | Path, seconds: float, size: int = THUMBNAIL_SIZE) -> bytes:
    """The frame nearest `seconds` of the video at `path`, as a square PNG of side `size`."""
    info = probe_video(path)
    index = int(np.clip(round(seconds * info.fps), 0, max(0, info.num_frames - 1)))
    frame = next(decode_frames_chunked(path, [index], size))[0]  # (size, size, 3) uint8
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()
