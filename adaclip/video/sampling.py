"""Frame sampling (SPEC section 1): which N of a video's L frames to decode.

The video is split into N equal segments with integer boundaries ``b_i = floor(i * L / N)``
(i = 0..N), as AdaCLIP and Clip-Hitchhiker do:

- ``segment``: the midpoint of each segment, ``(b_i + b_{i+1}) // 2``;
- ``uniform``: the start of each segment, ``b_i = floor(i * L / N)``;
- ``random``: N distinct indices drawn uniformly without replacement, sorted (training only).

When L < N the segment and uniform formulas repeat indices by themselves; ``random`` then takes
every frame once and draws the remaining N - L with replacement. L = 0 is an error.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SamplingMode = Literal["segment", "uniform", "random"]


def _boundaries(length: int, num: int) -> np.ndarray:
    """Integer segment boundaries floor(i * L / N) for i = 0..N, exact in integer arithmetic."""
    return (np.arange(num + 1, dtype=np.int64) * length) // num


def sample_indices(
    num_frames_in_video: int,
    num_frames: int,
    mode: SamplingMode = "segment",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return (N,) int64 frame indices in [0, L), in temporal order, for a video of L frames."""
    length, num = int(num_frames_in_video), int(num_frames)
    if length <= 0:
        raise ValueError(f"cannot sample frames from a video with {length} decodable frames")
    if num <= 0:
        raise ValueError(f"num_frames must be >= 1, got {num}")
    if mode == "segment":
        bounds = _boundaries(length, num)
        return (bounds[:-1] + bounds[1:]) // 2
    if mode == "uniform":
        return _boundaries(length, num)[:-1]
    if mode == "random":
        rng = rng if rng is not None else np.random.default_rng()
        if length >= num:
            picks = rng.choice(length, size=num, replace=False)
        else:
            extra = rng.choice(length, size=num - length, replace=True)
            picks = np.concatenate([np.arange(length), extra])
        return np.sort(picks).astype(np.int64)
    raise ValueError(f"unknown sampling mode {mode!r}; expected 'segment', 'uniform' or 'random'")
