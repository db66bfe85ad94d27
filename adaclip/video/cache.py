"""A decoded-frame cache on disk: decoding is the bottleneck of video training, so decode once.

Entries are uncompressed ``.npz`` files, one per video, under a folder named by a hash of the
decode settings (frames, sampling, sizes, grey or colour), so changing a setting never reads stale
frames. An entry is keyed by the file's absolute path, size and modification time: replacing a
video invalidates its entry. Writes are atomic (temporary file, then rename), so a job killed
mid-write leaves no half entry and several decode workers can share one cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from adaclip.video.decode import DecodedVideo

_FIELDS = ("clip_frames", "selector_frames", "indices", "timestamps")


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable name for a set of decode settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class FrameCache:
    """Decoded videos stored under ``root/<settings key>/``."""

    def __init__(self, root: str | Path, settings: dict[str, Any]):
        self.dir = Path(root) / settings_key(settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "settings.json"
        if not meta.exists():
            meta.write_text(json.dumps(settings, sort_keys=True, indent=1))

    def _entry(self, path: str | Path) -> Path:
        path = Path(path).resolve()
        st = path.stat()
        ident = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        return self.dir / f"{hashlib.sha1(ident.encode()).hexdigest()}.npz"

    def get(self, path: str | Path) -> DecodedVideo | None:
        """The cached frames of `path`, or None when absent (or the file changed since)."""
        try:
            entry = self._entry(path)
            with np.load(entry) as z:
                arrays = {name: z[name] for name in _FIELDS}
                scalars = z["scalars"]
        except (OSError, KeyError, ValueError):
            return None
        return DecodedVideo(
            **arrays,
            duration=float(scalars[0]),
            fps=float(scalars[1]),
            num_video_frames=int(scalars[2]),
        )

    def put(self, path: str | Path, video: DecodedVideo) -> None:
        """Store `video` atomically as the entry of `path`."""
        entry = self._entry(path)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    **{name: getattr(video, name) for name in _FIELDS},
                    scalars=np.array([video.duration, video.fps, video.num_video_frames], dtype=np.float64),
                )
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.npz"))
