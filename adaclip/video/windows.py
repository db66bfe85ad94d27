"""Long videos as consecutive windows: each window is sampled, selected and embedded on its own.

A 90-minute recording squeezed into one N-frame sample gives one vector that describes nothing in
particular and a "moment" that can be minutes off. So a video longer than ``window_seconds`` is
cut into windows of ``window_seconds`` (each ``window_seconds - overlap_seconds`` after the last),
each with its own N-frame sampling (SPEC section 1 over the window's frames); the remainder is the
last window, however short, so a live stream cut into windows as its segments arrive gets exactly
the windows of the whole file. A video of at most one window (the papers' 10-30 s clips) stays one
window, as before.

Decoding reads the file once, in order, and hands out each window as soon as its last frame is
decoded, so memory holds about one window's frames whatever the length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaclip.video.decode import DecodedVideo, _iter_crops, _open_reader
from adaclip.video.probe import DECODE_DEADLINE_S, Deadline
from adaclip.video.sampling import SamplingMode, sample_indices
from adaclip.video.transforms import resize_rgb, to_grey


@dataclass(frozen=True)
class Window:
    """Frames [start_frame, end_frame) of a video: window `index` of `count`."""

    index: int
    count: int
    start_frame: int
    end_frame: int


def plan_windows(
    num_frames: int, fps: float, window_seconds: float, overlap_seconds: float = 0.0
) -> list[Window]:
    """The windows of a video of `num_frames` frames at `fps` (see the module docstring)."""
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"a video needs frames and a frame rate, got {num_frames} frames at {fps} fps")
    if not 0 <= overlap_seconds < window_seconds:
        raise ValueError(f"overlap {overlap_seconds} s must be in [0, window {window_seconds} s)")
    length = max(1, round(window_seconds * fps))
    stride = max(1, length - round(overlap_seconds * fps))
    spans: list[list[int]] = []
    start = 0
    while True:
        end = min(start + length, num_frames)
        spans.append([start, end])
        if end == num_frames:
            break
        start += stride
    return [Window(i, len(spans), s, e) for i, (s, e) in enumerate(spans)]


def decode_windows(
    path: str | Path,
    num_frames: int,
    window_seconds: float,
    overlap_seconds: float = 0.0,
    sampling: SamplingMode = "segment",
    clip_size: int = 224,
    selector_size: int = 56,
    selector_grayscale: bool = True,
    *,
    deadline: float | Deadline = DECODE_DEADLINE_S,
) -> Iterator[DecodedVideo]:
    """Yield one `DecodedVideo` per window, in order, each with N frames sampled inside it and its
    `window`, `num_windows`, `window_start` and `window_end` set. One pass over the file; one
    deadline for the whole file. Raises VideoDecodeError for any unusable input."""
    path = Path(path)
    with _open_reader(path, clip_size, None, "auto", Deadline.of(deadline)) as reader:
        fps, total = reader.fps, reader.num_frames
        windows = plan_windows(total, fps, window_seconds, overlap_seconds)
        picks = [
            w.start_frame + sample_indices(w.end_frame - w.start_frame, num_frames, sampling) for w in windows
        ]
        wanted = np.unique(np.concatenate(picks))
        crops: dict[int, np.ndarray] = {}
        pending = 0  # next window to hand out
        for index, crop in zip(wanted, _iter_crops(reader, wanted, clip_size), strict=True):
            crops[int(index)] = crop
            while pending < len(windows) and picks[pending][-1] <= index:
                yield _window_video(
                    windows[pending], picks[pending], crops, fps, total, selector_size, selector_grayscale
                )
                pending += 1
                keep_from = picks[pending][0] if pending < len(windows) else total
                crops = {i: c for i, c in crops.items() if i >= keep_from}


def _window_video(
    window: Window,
    indices: np.ndarray,
    crops: dict[int, np.ndarray],
    fps: float,
    total: int,
    selector_size: int,
    grayscale: bool,
) -> DecodedVideo:
    clip = np.stack([crops[int(i)] for i in indices])
    selector = np.stack([resize_rgb(c, selector_size, selector_size) for c in clip])
    return DecodedVideo(
        clip_frames=clip,
        selector_frames=to_grey(selector) if grayscale else selector,
        indices=indices.astype(np.int64),
        timestamps=(indices / fps).astype(np.float32),
        duration=total / fps,
        fps=fps,
        num_video_frames=total,
        window=window.index,
        num_windows=window.count,
        window_start=window.start_frame / fps,
        window_end=window.end_frame / fps,
    )
