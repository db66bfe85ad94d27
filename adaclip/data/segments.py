"""Write a recording as the MPEG-TS segments an HLS encoder cuts: for live-stream tests and the
stream benchmark.

Each segment opens with a keyframe and timestamps run on across segments, so the segments'
bytes concatenated are the whole recording (a playable MPEG-TS file).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

X264 = {"preset": "veryfast", "crf": "23", "threads": "1", "bf": "0"}


def write_ts_segments(
    out: Path, pictures: Iterable[np.ndarray], num_segments: int, seg_frames: int, fps: int
) -> list[Path]:
    """`num_segments` files `segmentNNN.ts` of `seg_frames` (H, W, 3) uint8 RGB pictures each, in
    order (H and W even, as H.264 4:2:0 needs)."""
    out.mkdir(parents=True, exist_ok=True)
    frames = iter(pictures)
    paths = []
    for s in range(num_segments):
        path = out / f"segment{s:03d}.ts"
        with av.open(str(path), "w", format="mpegts") as container:
            stream = None
            for i in range(seg_frames):
                picture = next(frames)
                if stream is None:
                    stream = container.add_stream("libx264", rate=fps)
                    stream.height, stream.width = picture.shape[:2]
                    stream.pix_fmt, stream.options = "yuv420p", {**X264, "g": str(seg_frames)}
                    stream.time_base = Fraction(1, fps)
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts, frame.time_base = s * seg_frames + i, Fraction(1, fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths
