"""Cheap checks before decoding: is the file there, non-empty, complete and a video container?

Decoders misbehave on broken input (decord can print, return garbage or crash on some files), so
every file is validated here first, with reads of a few bytes and a PyAV header probe only.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from adaclip.errors import VideoDecodeError

# Top-level box types that can open an ISO-BMFF (mp4/mov/m4v/3gp) file.
_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}

# Longest frame side accepted: 8K UHD is 7680 px; larger comes from no camera, only from files made
# to exhaust a decoder's memory (one 16384 x 16384 frame is 800 MB as RGB).
MAX_FRAME_SIDE = 8192
# Longest over shortest side accepted: 32:9 panoramas are 3.6; a narrower strip scales to absurd
# frames (2 x 4096 becomes 224 x 458,752 px) and its centre crop shows almost nothing of it.
MAX_ASPECT_RATIO = 8.0
# Wall-clock seconds one file may take to probe and decode, so a pathological file (millions of
# tiny packets, one keyframe for an hour) cannot hold a worker for minutes; callers may pass less.
DECODE_DEADLINE_S = 120.0
# Video packets counted at most when a header has no frame count: over 18 h at 30 fps; more is a
# packet flood, not a video anyone searches, and counting it would take minutes.
MAX_COUNTED_PACKETS = 2_000_000
# Packets demuxed between two deadline checks while counting (a check costs ~0.1 us, a packet ~10 us).
_CHECK_EVERY = 256


class DeadlineExceeded(VideoDecodeError):
    """A file took longer than its time budget to probe or decode; no other backend is tried."""


class Deadline:
    """A wall-clock budget for one file, started at construction and checked between packets,
    frames and chunks; pass one to ``probe_video``, ``decode_video`` ... to share it among calls."""

    def __init__(self, seconds: float = DECODE_DEADLINE_S, clock: Callable[[], float] = time.monotonic):
        if not seconds >= 0:
            raise ValueError(f"a deadline must be >= 0 seconds, got {seconds}")
        self.seconds, self._clock = float(seconds), clock
        self._end = clock() + self.seconds

    @classmethod
    def of(cls, deadline: float | Deadline) -> Deadline:
        """``deadline`` itself if it is one (shared budget), else a new one of that many seconds."""
        return deadline if isinstance(deadline, Deadline) else cls(deadline)

    def expired(self) -> bool:
        return self._clock() > self._end

    def check(self, path: str | Path, doing: str) -> None:
        """Raise DeadlineExceeded ("<doing> took longer than X s") once the budget is spent."""
        if self.expired():
            raise DeadlineExceeded(
                path, f"{doing} took longer than {self.seconds:g} s (the per-file time limit)"
            )

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (a generator's consumer working on a yielded chunk) is not counted."""
        start = self._clock()
        try:
            yield
        finally:
            self._end += self._clock() - start


@dataclass(frozen=True)
class VideoInfo:
    """What a container header says about its first video stream."""

    num_frames: int
    fps: float
    duration: float  # seconds
    width: int
    height: int


def check_file(path: str | Path) -> Path:
    """Raise VideoDecodeError unless ``path`` is an existing, non-empty regular file."""
    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty")
    return path


def check_mp4_boxes(path: Path) -> None:
    """For ISO-BMFF files, walk the top-level boxes: one running past the end means truncation.

    A cut mp4 either loses its index ('moov' box, written last by most muxers) or its frame data;
    both show here without decoding anything. Files of other formats pass unchecked.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in _MP4_FIRST_BOXES:
            return
        offset, seen = 0, set()
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) >= 16:  # 64-bit size follows the type
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:  # box runs to the end of the file
                box_size = size - offset
            if box_size < 8:
                raise VideoDecodeError(
                    path, f"truncated or corrupt: mp4 box at byte {offset} has size {box_size}"
                )
            if offset + box_size > size:
                name = box_type.decode("latin-1")
                raise VideoDecodeError(
                    path, f"truncated: mp4 box '{name}' needs {offset + box_size} bytes, the file has {size}"
                )
            seen.add(box_type)
            offset += box_size
    if b"moov" not in seen and b"moof" not in seen:
        raise VideoDecodeError(path, "truncated: mp4 file has no 'moov' index box")


def check_frame_size(path: str | Path, width: int, height: int) -> None:
    """Raise VideoDecodeError for a frame size no real video has: empty, a side over
    ``MAX_FRAME_SIDE``, or an aspect ratio over ``MAX_ASPECT_RATIO`` (header values, before decoding)."""
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"not a video container: frame size {width}x{height}")
    if max(width, height) > MAX_FRAME_SIDE:
        raise VideoDecodeError(
            path, f"frame size {width}x{height} is too large: a side may be at most {MAX_FRAME_SIDE} px"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise VideoDecodeError(
            path,
            f"frame size {width}x{height} has an aspect ratio of {ratio:.4g}:1, "
            f"more than the {MAX_ASPECT_RATIO:g}:1 accepted",
        )


def _count_packets(
    path: Path,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    fps: float,
    deadline: Deadline,
) -> tuple[int, float | None]:
    """Frames in a stream whose header has no count (mkv, webm): its video packets, demuxed only,
    and the seconds they span (a container's duration also covers its audio, which may run longer).

    Stops with VideoDecodeError past ``MAX_COUNTED_PACKETS`` packets or when ``deadline`` passes.
    """
    tb = stream.time_base or Fraction(1, 1000)
    frame_ticks = round(1 / (fps * tb)) if fps > 0 else 0  # for packets without a duration
    count, first, end = 0, None, None
    for seen, packet in enumerate(container.demux(stream)):
        if seen % _CHECK_EVERY == 0:
            deadline.check(path, "probing (counting frames)")
        if packet.size <= 0:
            continue
        count += 1
        if count > MAX_COUNTED_PACKETS:
            raise VideoDecodeError(
                path,
                f"probing stopped: more than {MAX_COUNTED_PACKETS} video packets (not a plausible video)",
            )
        if packet.pts is not None:
            stop = packet.pts + (packet.duration or frame_ticks)
            first = packet.pts if first is None else min(first, packet.pts)
            end = stop if end is None else max(end, stop)
    span = float((end - first) * tb) if first is not None and end > first else None
    return count, span


def _read_header(path: Path, count_frames: bool, deadline: Deadline) -> tuple[VideoInfo, bool]:
    try:
        with av.open(str(path)) as container:
            deadline.check(path, "probing")  # opening reads and analyses the first packets
            if not container.streams.video:
                raise VideoDecodeError(path, "not a video container: it has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            check_frame_size(path, width, height)  # before counting: reject absurd files cheaply
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            num_frames, exact = int(stream.frames or 0), True
            if num_frames <= 0 and count_frames:
                num_frames, span = _count_packets(path, container, stream, fps, deadline)
                duration = span if span is not None else duration
            elif num_frames <= 0:  # estimate; the decoder that needs it counts exactly
                num_frames, exact = round((duration or 0.0) * fps), False
    except VideoDecodeError:
        raise
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"not a video container ({e.strerror or e})") from e
    except (OSError, ValueError, RuntimeError) as e:
        raise VideoDecodeError(path, f"not a video container ({e})") from e
    if exact and num_frames <= 0:
        raise VideoDecodeError(path, "no decodable frames")
    if fps <= 0:
        fps = num_frames / duration if duration and num_frames > 0 else 25.0
    if duration is None:
        duration = num_frames / fps
    info = VideoInfo(num_frames=num_frames, fps=fps, duration=duration, width=width, height=height)
    return info, exact


def inspect_video(
    path: str | Path, *, deadline: float | Deadline = DECODE_DEADLINE_S
) -> tuple[VideoInfo, bool]:
    """Validate ``path`` and read its header only (no full read of the file).

    The flag says whether ``num_frames`` is exact; containers without a frame count in the header
    (mkv, webm) get an estimate from duration x fps, and decoders that need the count measure it.
    ``deadline``: seconds, or a running ``Deadline`` shared with the decode that follows.
    """
    path = check_file(path)
    check_mp4_boxes(path)
    return _read_header(path, count_frames=False, deadline=Deadline.of(deadline))


def probe_video(path: str | Path, *, deadline: float | Deadline = DECODE_DEADLINE_S) -> VideoInfo:
    """Validate ``path`` and describe its first video stream; raise VideoDecodeError if unusable.

    ``num_frames`` is exact: the header's count, else the number of video packets (then
    ``duration`` is the span of those packets). Counting stops with VideoDecodeError once
    ``deadline`` (seconds, or a running ``Deadline``) passes.
    """
    path = check_file(path)
    check_mp4_boxes(path)
    return _read_header(path, count_frames=True, deadline=Deadline.of(deadline))[0]
