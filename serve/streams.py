"""Live streams: segments appended as they arrive, kept durably, cut into windows for the index.

A stream is a directory under the streams folder: `stream.json` (title, metadata, the segments
with their start, duration, byte range and acknowledgement time, the windows already indexed) and
`media.ts`, the segments' bytes in order (MPEG-TS segments concatenate into one playable stream,
as HLS cuts them). A segment is acknowledged only once both are on disk (fsync, then an atomic
rename of the state), so a restart loses no acknowledged segment; bytes written after the last
state (a crash mid-append) are cut off by the next append.

Rules for `append`: a segment must start where the previous one ended (within
START_TOLERANCE_S); the same segment again (same start, same bytes) is an idempotent retry;
anything else (a gap, an overlap, other bytes at a stored start, a segment after the end) is
refused with the start expected, and changes nothing.

Window w of a stream holds the segments that start in [w W, (w + 1) W) for the index's window
length W; it is complete once a later segment has arrived or the stream has ended. With segment
lengths that divide W, a stream's windows are exactly those of uploading its whole file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serve.upload import disk_full_is_507

START_TOLERANCE_S = 0.05  # how far a segment's declared start may be from the previous end
STATE, MEDIA, LOCK = "stream.json", "media.ts", ".lock"


class StreamError(Exception):
    """A refused stream operation: `status` 404 (no such stream) or 409 (out of order, ended)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Segment:
    start: float  # seconds into the stream
    duration: float
    sha256: str
    offset: int  # byte range [offset, offset + size) of media.ts
    size: int
    acked_at: float  # wall clock of the acknowledgement


@dataclass
class Stream:
    id: str
    title: str | None
    metadata: dict[str, Any] | None
    created_at: float
    ended: bool = False
    ended_at: float | None = None
    segments: list[Segment] = field(default_factory=list)
    indexed: dict[str, float] = field(default_factory=dict)  # window index (str) -> wall clock

    @property
    def duration(self) -> float:
        return self.segments[-1].start + self.segments[-1].duration if self.segments else 0.0

    def windows(self, window_s: float) -> dict[int, list[Segment]]:
        """Segments by window: window w holds the segments that start in [w W, (w + 1) W)."""
        out: dict[int, list[Segment]] = {}
        for segment in self.segments:
            out.setdefault(int((segment.start + START_TOLERANCE_S) // window_s), []).append(segment)
        return out

    def delays(self, window_s: float) -> dict[int, float]:
        """Seconds from the moment each indexed window was complete (the acknowledgement of the
        next window's first segment, or the end) to the moment it was searchable."""
        windows = self.windows(window_s)
        out = {}
        for key, at in self.indexed.items():
            later = [segs[0].acked_at for w, segs in windows.items() if w > int(key)]
            complete = min(later) if later else self.ended_at
            if complete is not None:
                out[int(key)] = max(0.0, at - complete)
        return out

    def complete_windows(self, window_s: float) -> dict[int, list[Segment]]:
        """Windows whose segments are all in (a later window started, or the stream ended) and that
        are not indexed yet."""
        windows = self.windows(window_s)
        last = max(windows, default=-1)
        return {
            w: segments
            for w, segments in windows.items()
            if (w < last or self.ended) and str(w) not in self.indexed
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stream:
        return cls(**{**data, "segments": [Segment(**s) for s in data["segments"]]})


class StreamStore:
    """Streams on disk (see the module docstring); every method is safe across processes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, title: str | None, metadata: dict[str, Any] | None) -> Stream:
        stream = Stream(id=str(uuid.uuid4()), title=title, metadata=metadata, created_at=time.time())
        (self.root / stream.id).mkdir()
        with disk_full_is_507():
            self._save(stream)
        return stream

    def get(self, stream_id: str) -> Stream:
        path = self._dir(stream_id) / STATE
        try:
            return Stream.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise StreamError(404, "not_found", f"no stream with id {stream_id!r}") from None

    def ids(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{STATE}"))

    def media(self, stream_id: str) -> Path | None:
        path = self._dir(stream_id) / MEDIA
        return path if path.is_file() else None

    def append(
        self, stream_id: str, staged: Path, start: float, duration: float, sha256: str
    ) -> tuple[Stream, bool]:
        """Add a probed segment (see the module docstring): (stream, whether it was a retry of a
        stored segment). Durable when it returns. StreamError 404/409, UploadError 507."""
        with self._locked(stream_id):
            stream = self.get(stream_id)
            for segment in stream.segments:
                if abs(segment.start - start) <= START_TOLERANCE_S:
                    if segment.sha256 == sha256:
                        return stream, True
                    raise StreamError(409, "conflict", f"another segment is stored at {segment.start:g} s")
            if stream.ended:
                raise StreamError(409, "conflict", "the stream has ended")
            if abs(start - stream.duration) > START_TOLERANCE_S:
                raise StreamError(
                    409,
                    "out_of_order",
                    f"a segment starting at {start:g} s does not follow the last one: the next must start at "
                    f"{stream.duration:g} s",
                )
            offset = sum(s.size for s in stream.segments)
            size = staged.stat().st_size
            with disk_full_is_507():
                with open(self._dir(stream_id) / MEDIA, "ab" if offset == 0 else "r+b") as out:
                    out.truncate(offset)  # bytes of a crashed append were never acknowledged
                    out.seek(offset)
                    with open(staged, "rb") as src:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                stream.segments.append(Segment(start, duration, sha256, offset, size, time.time()))
                self._save(stream)
            return stream, False

    def end(self, stream_id: str) -> Stream:
        with self._locked(stream_id):
            stream = self.get(stream_id)
            if not stream.ended:
                stream.ended, stream.ended_at = True, time.time()
                self._save(stream)
            return stream

    def mark_indexed(self, stream_id: str, window: int) -> Stream:
        with self._locked(stream_id):
            stream = self.get(stream_id)
            stream.indexed[str(window)] = time.time()
            self._save(stream)
            return stream

    def window_file(self, stream: Stream, segments: list[Segment], into: Path) -> Path:
        """The bytes of `segments` (consecutive) as one file under `into`, for decoding; the caller
        deletes it."""
        into.mkdir(parents=True, exist_ok=True)
        path = into / f"window-{uuid.uuid4().hex}.ts"
        first, last = segments[0], segments[-1]
        with disk_full_is_507(), open(self._dir(stream.id) / MEDIA, "rb") as src, open(path, "wb") as out:
            src.seek(first.offset)
            out.write(src.read(last.offset + last.size - first.offset))
        return path

    def remove(self, stream_id: str) -> bool:
        directory = self._dir(stream_id)
        if not (directory / STATE).is_file():
            return False
        for path in directory.iterdir():
            path.unlink(missing_ok=True)
        directory.rmdir()
        return True

    # ---- helpers ----------------------------------------------------------------------------

    def _dir(self, stream_id: str) -> Path:
        try:
            return self.root / str(uuid.UUID(str(stream_id)))
        except ValueError:
            raise StreamError(404, "not_found", f"no stream with id {stream_id!r}") from None

    @contextlib.contextmanager
    def _locked(self, stream_id: str) -> Iterator[None]:
        directory = self._dir(stream_id)
        if not directory.is_dir():
            raise StreamError(404, "not_found", f"no stream with id {stream_id!r}")
        with open(directory / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _save(self, stream: Stream) -> None:
        """Write the state atomically and durably (temp file, fsync, rename, fsync the folder)."""
        directory = self.root / stream.id
        tmp = directory / f"{STATE}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(stream), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / STATE)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
