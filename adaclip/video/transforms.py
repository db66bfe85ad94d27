"""Frame geometry: the reduced decode size, centre crops, small resizes and grey conversion (numpy only)."""

from __future__ import annotations

import av
import numpy as np

# ITU-R BT.601 luma weights, as most grey conversions (PIL's "L", OpenCV) use them.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Longest side of any frame as decoded (before the centre crop), whatever the input or the caller's
# ``max_side``: a frame then holds at most 2048 x 2048 x 3 = 12 MiB. A 224 crop of an 8:1 video
# (the widest the probe accepts) decodes at 224 x 1792, under it.
MAX_DECODE_SIDE = 2048


def scaled_size(width: int, height: int, short_side: int, max_side: int | None = None) -> tuple[int, int]:
    """(width, height) with the shorter side equal to ``short_side`` and the aspect ratio kept.

    ``max_side`` caps the longer side (a memory guard for extreme aspect ratios); the shorter side
    then shrinks below ``short_side`` and the centre crop is upscaled afterwards. The cap is never
    more than ``MAX_DECODE_SIDE``, so both sides returned are at most that, whatever the input.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    max_side = MAX_DECODE_SIDE if max_side is None else min(max_side, MAX_DECODE_SIDE)
    short, long = min(width, height), max(width, height)
    new_short, new_long = short_side, max(short_side, round(long * short_side / short))
    if new_long > max_side:
        new_short, new_long = max(1, round(short * max_side / long)), max_side
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of side ``min(size, H, W)`` from (..., H, W, C) frames."""
    h, w = frames.shape[-3], frames.shape[-2]
    side_h, side_w = min(size, h), min(size, w)
    top, left = (h - side_h) // 2, (w - side_w) // 2
    return frames[..., top : top + side_h, left : left + side_w, :]


def resize_rgb(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize one (H, W, 3) uint8 RGB frame with swscale's area filter (good for shrinking)."""
    if frame.shape[0] == height and frame.shape[1] == width:
        return frame
    video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    out = video_frame.reformat(width=width, height=height, interpolation="AREA")
    return out.to_ndarray()


def to_grey(frames: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 1) uint8 luma."""
    luma = frames.astype(np.float32) @ _LUMA
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
