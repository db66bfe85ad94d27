"""Frame sources: decord (random access, scaled while decoding) and PyAV (sequential fallback).

Both read only the requested frames at a reduced size, so memory stays bounded by a few small
frames whatever the input resolution or length. ``FallbackReader`` tries decord first and moves to
PyAV when decord cannot open a container or fails part-way through. Both check the file's
``Deadline`` between frames, so time stays bounded too (a deadline ends the read: no fallback).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import numpy as np

from adaclip.errors import VideoDecodeError
from adaclip.video.probe import Deadline, DeadlineExceeded, VideoInfo, probe_video

try:  # decord has no wheels for some platforms; PyAV then does all the decoding
    import decord
    from decord import DECORDError
except ImportError:  # pragma: no cover - exercised only where decord is absent
    decord = None
    DECORDError = RuntimeError

Backend = Literal["auto", "decord", "pyav"]
_ORDER: dict[str, tuple[str, ...]] = {"auto": ("decord", "pyav"), "decord": ("decord",), "pyav": ("pyav",)}
_DECORD_ERRORS = (DECORDError, RuntimeError, ValueError, IndexError, OSError)
_quiet = False


class BackendError(Exception):
    """One backend could not read the file; ``str(e)`` is a reason for VideoDecodeError."""


def _as_numpy(batch: object) -> np.ndarray:
    """decord returns its own NDArray, or a torch tensor if a caller set decord's bridge to torch."""
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)


class DecordSource:
    """decord VideoReader that scales frames to (width, height) while decoding; one frame per call.

    decord's ``get_batch`` seeks and decodes forward index by index itself, so one call per frame
    costs the same (measured: 16 of 300 frames, 0.23 s both ways; a single-GOP file decodes forward
    once either way) and lets the deadline be checked between frames: a batch call cannot be
    interrupted, and with one keyframe for the whole file it decodes the whole file.

    decord 0.6.0 cannot output some frame widths (its copy fails with "The size must exactly
    match"; measured: 4, 6, 8, 12, 16, 24, 48 and 72 px). Those widths are widened by one pixel,
    which the centre crop then trims; widths found failing at run time are remembered too.
    """

    _bad_widths: set[int] = {4, 6, 8, 12, 16, 24, 48, 72}

    def __init__(
        self, path: Path, width: int, height: int, deadline: Deadline | None = None, num_threads: int = 1
    ):
        global _quiet
        if decord is None:
            raise BackendError("decord is not installed")
        if not _quiet:  # decord's bundled ffmpeg prints every container complaint to stderr
            decord.logging.set_level(decord.logging.QUIET)
            _quiet = True
        self._path, self._height, self._threads = path, height, num_threads
        self._deadline = deadline or Deadline()
        self._open(width)

    def _open(self, width: int) -> None:
        while width in self._bad_widths:
            width += 1
        self._width = width
        try:
            self._reader = decord.VideoReader(
                str(self._path), width=width, height=self._height, num_threads=self._threads
            )
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except _DECORD_ERRORS as e:
            raise BackendError(f"decord cannot open it ({str(e).splitlines()[0][:200]})") from e

    def _get_batch(self, part: list[int], retries: int = 2) -> np.ndarray:
        try:
            return _as_numpy(self._reader.get_batch(part))
        except _DECORD_ERRORS as e:
            if "size must exactly match" not in str(e) or retries == 0:
                raise BackendError(
                    f"truncated or corrupt: decord failed at frames {part[0]}-{part[-1]}"
                ) from e
            failed = self._width
            self._open(failed + 1)  # decord's output-size bug, or frames changing size mid-stream
            batch = self._get_batch(part, retries - 1)
            self._bad_widths.add(failed)  # only once a wider output worked: it was decord's bug
            return batch

    def iter_frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the (H, W, 3) uint8 frame at each of the sorted, distinct ``indices``."""
        for index in indices:
            self._deadline.check(self._path, "decoding")
            batch = self._get_batch([int(index)])
            if batch.ndim != 4 or batch.shape[0] != 1 or batch.shape[-1] != 3:
                raise BackendError(
                    f"truncated or corrupt: decord returned shape {batch.shape} for frame {index}"
                )
            yield batch[0]

    def close(self) -> None:
        self._reader = None


class PyAVSource:
    """Sequential PyAV decoder: decodes every frame, converts and keeps only the wanted ones."""

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        width: int,
        height: int,
        exact_count: bool = True,
        deadline: Deadline | None = None,
    ):
        self._path, self._width, self._height = path, width, height
        self._deadline = deadline or Deadline()
        self.num_frames, self.fps = info.num_frames, info.fps
        if not exact_count:
            self.num_frames = probe_video(path, deadline=self._deadline).num_frames  # counts the packets

    def iter_frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the (H, W, 3) uint8 frame at each of the sorted, distinct ``indices``."""
        if len(indices) == 0:
            return
        wanted = iter(int(i) for i in indices)
        target, position = next(wanted), -1
        try:
            with av.open(str(self._path)) as container:
                stream = container.streams.video[0]
                stream.thread_count = 1
                for position, frame in enumerate(container.decode(stream)):
                    self._deadline.check(self._path, "decoding")  # skipped frames cost decoding too
                    if position < target:
                        continue
                    rgb = frame.reformat(width=self._width, height=self._height, format="rgb24")
                    yield rgb.to_ndarray()
                    target = next(wanted, None)
                    if target is None:
                        return
        except av.FFmpegError as e:
            raise BackendError(
                f"truncated or corrupt: decoding stopped after frame {position} ({e.strerror or e})"
            ) from e
        if position < 0:
            raise BackendError("no decodable frames")
        raise BackendError(
            f"truncated: only {position + 1} of {self.num_frames} frames decode (wanted frame {target})"
        )

    def close(self) -> None:
        pass


class FallbackReader:
    """Reads frames with the first backend that works, switching to the next one mid-way on failure."""

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        width: int,
        height: int,
        backend: Backend = "auto",
        exact_count: bool = True,
        deadline: Deadline | None = None,
    ):
        if backend not in _ORDER:
            raise ValueError(f"unknown decode backend {backend!r}; expected one of {sorted(_ORDER)}")
        self._path, self._info, self._size = path, info, (width, height)
        self._exact, self._deadline = exact_count, deadline or Deadline()
        self._pending = list(_ORDER[backend])
        self._reasons: list[str] = []
        self.backend = ""
        self._source = self._open_next()
        self.num_frames = self._source.num_frames
        self.fps = self._source.fps if self._source.fps > 0 else info.fps

    def _open_next(self) -> DecordSource | PyAVSource:
        while self._pending:
            name = self._pending.pop(0)
            try:
                if name == "decord":
                    source = DecordSource(self._path, *self._size, deadline=self._deadline)
                else:
                    source = PyAVSource(
                        self._path, self._info, *self._size, exact_count=self._exact, deadline=self._deadline
                    )
            except DeadlineExceeded:
                raise  # out of time: another backend would only take longer
            except (BackendError, VideoDecodeError) as e:
                self._reasons.append(e.reason if isinstance(e, VideoDecodeError) else str(e))
                continue
            if source.num_frames <= 0:
                self._reasons.append("no decodable frames")
                continue
            self.backend = name
            return source
        raise VideoDecodeError(self._path, self._reasons[-1] if self._reasons else "no decoder available")

    def iter_frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the frame at each sorted, distinct index; raise VideoDecodeError if no backend can."""
        if len(indices) and (indices[0] < 0 or indices[-1] >= self.num_frames):
            raise ValueError(
                f"frame indices must lie in [0, {self.num_frames}), got {indices[0]}..{indices[-1]}"
            )
        done = 0
        while True:
            try:
                for frame in self._source.iter_frames(indices[done:]):
                    yield frame
                    done += 1
                return
            except BackendError as e:
                self._reasons.append(str(e))
                self._source.close()
                self._source = self._open_next()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> FallbackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
