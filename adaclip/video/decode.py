"""Decode the N sampled frames of a video as two uint8 views: CLIP-size RGB and a cheap selector view.

Memory stays bounded whatever the input: the file is validated first (``probe_video``: absurd
frame sizes are refused from the header), frames are scaled while decoding (decord's width/height,
or PyAV's per-frame reformat) to at most ``MAX_DECODE_SIDE`` px a side, and only the sampled frames
are kept. Time stays bounded too: one ``Deadline`` (``DECODE_DEADLINE_S`` unless the caller passes
less) covers the probe and the decode of a file, checked between frames. Any unusable file raises
``VideoDecodeError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaclip.errors import VideoDecodeError
from adaclip.video.probe import DECODE_DEADLINE_S, Deadline, inspect_video
from adaclip.video.readers import Backend, FallbackReader
from adaclip.video.sampling import SamplingMode, sample_indices
from adaclip.video.transforms import center_crop, resize_rgb, scaled_size, to_grey


@dataclass(frozen=True)
class DecodedVideo:
    """N sampled frames of one video, in temporal order."""

    clip_frames: np.ndarray  # (N, S, S, 3) uint8 RGB, S = clip_size
    selector_frames: np.ndarray  # (N, s, s, C) uint8, s = selector_size, C = 1 (grey) or 3 (RGB)
    indices: np.ndarray  # (N,) int64 frame indices in [0, num_video_frames)
    timestamps: np.ndarray  # (N,) float32 seconds, index / fps
    duration: float  # seconds, num_video_frames / fps
    fps: float
    num_video_frames: int
    window: int = 0  # which window of a long video these frames sample (adaclip.video.windows)
    num_windows: int = 1
    window_start: float = 0.0  # seconds
    window_end: float | None = None  # seconds; None: the end of the video

    @property
    def span(self) -> tuple[float, float]:
        """(start, end) seconds of the window, the whole video for a one-window video."""
        return self.window_start, self.duration if self.window_end is None else self.window_end

    @classmethod
    def from_columns(cls, batch: dict[str, np.ndarray], i: int) -> DecodedVideo:
        """Row `i` of batch columns made by `DecodeSettings.columns`."""
        windows = (
            {
                "window": int(batch["window"][i]),
                "num_windows": int(batch["num_windows"][i]),
                "window_start": float(batch["window_start"][i]),
                "window_end": float(batch["window_end"][i]),
            }
            if "window" in batch
            else {}
        )
        return cls(
            clip_frames=np.asarray(batch["clip_frames"][i]),
            selector_frames=np.asarray(batch["selector_frames"][i]),
            indices=np.asarray(batch["indices"][i]),
            timestamps=np.asarray(batch["timestamps"][i]),
            duration=float(batch["duration"][i]),
            fps=float(batch["fps"][i]),
            num_video_frames=int(batch["num_video_frames"][i]),
            **windows,
        )


def _crop_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of a frame already scaled to shorter side ``size``; upscale if the side was capped."""
    crop = center_crop(frame, size)
    if crop.shape[0] != size or crop.shape[1] != size:
        crop = resize_rgb(crop, size, size)
    return crop


def _iter_crops(reader: FallbackReader, indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """One (size, size, 3) crop per entry of the sorted ``indices`` (repeats allowed), in order."""
    if np.any(np.diff(indices) < 0):
        raise ValueError("frame indices must be sorted in temporal order")
    unique, counts = np.unique(indices, return_counts=True)
    for frame, count in zip(reader.iter_frames(unique), counts, strict=True):
        crop = _crop_square(frame, size)
        for _ in range(count):
            yield crop


def _open_reader(
    path: Path, size: int, max_side: int | None, backend: Backend, deadline: Deadline
) -> FallbackReader:
    """Validate the file (cheap header checks), then open the first backend that can read it."""
    info, exact = inspect_video(path, deadline=deadline)
    width, height = scaled_size(info.width, info.height, size, max_side)
    return FallbackReader(path, info, width, height, backend=backend, exact_count=exact, deadline=deadline)


def decode_video(
    path: str | Path,
    num_frames: int,
    sampling: SamplingMode = "segment",
    clip_size: int = 224,
    selector_size: int = 56,
    selector_grayscale: bool = True,
    rng: np.random.Generator | None = None,
    max_side: int | None = None,
    backend: Backend = "auto",
    *,
    deadline: float | Deadline = DECODE_DEADLINE_S,
) -> DecodedVideo:
    """Sample ``num_frames`` frames (SPEC section 1) and return both views; see ``DecodedVideo``.

    Frames are resized so the shorter side is ``clip_size`` and centre-cropped to a square; the
    selector view is the same crops resized to ``selector_size`` (grey when ``selector_grayscale``).
    ``max_side`` caps the longer side of the decode size below ``MAX_DECODE_SIDE`` (the cap for all).
    ``backend`` 'auto' uses decord and falls back to PyAV; 'decord' or 'pyav' force one.
    ``deadline``: seconds for the whole probe and decode (or a running ``Deadline``).
    Raises VideoDecodeError (naming the file and why) for any unusable input, or once the deadline
    has passed.
    """
    path = Path(path)
    with _open_reader(path, clip_size, max_side, backend, Deadline.of(deadline)) as reader:
        indices = sample_indices(reader.num_frames, num_frames, sampling, rng)
        clip = np.empty((len(indices), clip_size, clip_size, 3), dtype=np.uint8)
        selector = np.empty((len(indices), selector_size, selector_size, 3), dtype=np.uint8)
        for i, crop in enumerate(_iter_crops(reader, indices, clip_size)):
            clip[i] = crop
            selector[i] = resize_rgb(crop, selector_size, selector_size)
        fps = reader.fps
        num_video_frames = reader.num_frames
    if selector_grayscale:
        selector = to_grey(selector)
    return DecodedVideo(
        clip_frames=clip,
        selector_frames=selector,
        indices=indices.astype(np.int64),
        timestamps=(indices / fps).astype(np.float32),
        duration=num_video_frames / fps,
        fps=fps,
        num_video_frames=num_video_frames,
    )


def decode_frames_chunked(
    path: str | Path,
    indices: np.ndarray | list[int],
    size: int,
    chunk: int = 16,
    max_side: int | None = None,
    backend: Backend = "auto",
    *,
    deadline: float | Deadline = DECODE_DEADLINE_S,
) -> Iterator[np.ndarray]:
    """Yield (c, size, size, 3) uint8 crops, c <= ``chunk``, for the sorted ``indices`` in order.

    For many frames per video (e.g. 120 for Clip-Hitchhiker evaluation): only one chunk of crops
    is held at a time. Indices must lie in [0, probe_video(path).num_frames). ``deadline`` bounds
    the time spent probing and decoding (seconds, from the first chunk asked for); the caller's
    time between chunks does not count.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    deadline = Deadline.of(deadline)
    with _open_reader(path, size, max_side, backend, deadline) as reader:
        if len(indices) and (indices.min() < 0 or indices.max() >= reader.num_frames):
            raise VideoDecodeError(
                path, f"frame indices {indices.min()}..{indices.max()} outside 0..{reader.num_frames - 1}"
            )
        buffer: list[np.ndarray] = []
        for crop in _iter_crops(reader, indices, size):
            buffer.append(crop)
            if len(buffer) == chunk:
                with deadline.paused():
                    yield np.stack(buffer)
                buffer = []
        if buffer:
            yield np.stack(buffer)
