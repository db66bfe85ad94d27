"""Write real encoded video files with PyAV (synthetic corpora, tests, demos).

Encoding is deterministic: one encoder thread and fixed options, so the same frames give the same
bytes on the same PyAV build.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

# Preferred codecs, best first, with options that keep the output decodable by decord. MPEG-4
# Part 2 comes first because its output is byte-for-byte repeatable; libx264 in PyAV 18's wheels
# is not (measured: the same frames encoded 8 times gave 2 different files for 4 of 8 videos, even
# with one thread), which would make the synthetic corpus differ between runs.
_CODECS: tuple[tuple[str, dict[str, str]], ...] = (
    ("mpeg4", {"qmin": "2", "qmax": "2"}),  # fixed quantiser 2: near-lossless, no ghosts
    ("libx264", {"preset": "veryfast", "crf": "18", "threads": "1"}),
)


@lru_cache(maxsize=1)
def pick_codec() -> str:
    """Name of the first encoder in ``_CODECS`` this PyAV build provides."""
    for name, _ in _CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - any failure means "not available here"
            continue
    raise RuntimeError(f"PyAV has none of the encoders {[c for c, _ in _CODECS]}; reinstall av")


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = 8,
    codec: str | None = None,
    options: dict[str, str] | None = None,
    faststart: bool = False,
) -> int:
    """Encode RGB uint8 frames (H, W, 3), H and W even, into a video file; returns the frame count.

    The container follows the file extension (.mp4, .mkv, .webm, ...); ``codec`` defaults to
    ``pick_codec()``.

    Frames are consumed one at a time, so a long video never sits in memory. ``faststart`` puts the
    index (moov box) first, as web uploads usually have it.
    """
    codec = codec or pick_codec()
    opts = dict(next((o for c, o in _CODECS if c == codec), {}))
    opts.update(options or {})
    container_opts = {"movflags": "faststart"} if faststart else {}
    count = 0
    with av.open(str(path), mode="w", options=container_opts) as container:
        stream = container.add_stream(codec, rate=fps, options=opts)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if count == 0:
            raise ValueError(f"write_video({path}): no frames given")
        for packet in stream.encode():
            container.mux(packet)
    return count
