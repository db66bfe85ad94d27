"""Cheap checks before decoding: is the file there, non-empty, complete and a video container?

Decoders misbehave on broken input (decord can print, return garbage or crash on some files), so
every file is validated here first, with reads of a few bytes and a PyAV header probe only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av

from adaclip.errors import VideoDecodeError

# Top-level box types that can open an ISO-BMFF (mp4/mov/m4v/3gp) file.
_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


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


def _count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frames in a stream whose header has no count (mkv, webm): its video packets, demuxed only."""
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _read_header(path: Path, count_frames: bool) -> tuple[VideoInfo, bool]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "not a video container: it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            num_frames, exact = int(stream.frames or 0), True
            if num_frames <= 0 and count_frames:
                num_frames = _count_packets(container, stream)
            elif num_frames <= 0:  # estimate; the decoder that needs it counts exactly
                num_frames, exact = round((duration or 0.0) * fps), False
            width, height = stream.codec_context.width, stream.codec_context.height
    except VideoDecodeError:
        raise
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"not a video container ({e.strerror or e})") from e
    except (OSError, ValueError, RuntimeError) as e:
        raise VideoDecodeError(path, f"not a video container ({e})") from e
    if exact and num_frames <= 0:
        raise VideoDecodeError(path, "no decodable frames")
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"not a video container: frame size {width}x{height}")
    if fps <= 0:
        fps = num_frames / duration if duration and num_frames > 0 else 25.0
    if duration is None:
        duration = num_frames / fps
    info = VideoInfo(num_frames=num_frames, fps=fps, duration=duration, width=width, height=height)
    return info, exact


def inspect_video(path: str | Path) -> tuple[VideoInfo, bool]:
    """Validate ``path`` and read its header only (no full read of the file).

    The flag says whether ``num_frames`` is exact; containers without a frame count in the header
    (mkv, webm) get an estimate from duration x fps, and decoders that need the count measure it.
    """
    path = check_file(path)
    check_mp4_boxes(path)
    return _read_header(path, count_frames=False)


def probe_video(path: str | Path) -> VideoInfo:
    """Validate ``path`` and describe its first video stream; raise VideoDecodeError if unusable.

    ``num_frames`` is exact: the header's count, else the number of video packets.
    """
    path = check_file(path)
    check_mp4_boxes(path)
    return _read_header(path, count_frames=True)[0]
