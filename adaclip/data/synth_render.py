"""Pixels of the synthetic corpus: grey textured distractor frames and a few informative frames.

Each informative frame shows one coloured shape with a dark outline (what the caption describes);
every other frame is low-contrast grey clutter. The outline makes informative frames stand out in a
cheap grey view (a learned selector can find them), while the caption's attributes (colour, shape,
position, size) are readable from any single informative frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 175, 55),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "cyan": (30, 205, 215),
    "magenta": (215, 45, 205),
    "orange": (250, 140, 15),
    "white": (250, 250, 250),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "bar")
POSITIONS: dict[str, tuple[float, float]] = {  # shape centre as (x, y) fractions of the frame side
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "centre": (0.5, 0.5),
}
SIZES: dict[str, float] = {"small": 0.12, "large": 0.21}  # shape radius as a fraction of the side


@dataclass(frozen=True)
class Scene:
    """What one synthetic video shows: the captioned attributes and when they are visible."""

    colour: str
    shape: str
    position: str
    size: str
    start: int  # first informative frame
    stop: int  # one past the last informative frame


def all_combinations() -> list[tuple[str, str, str, str]]:
    """Every (colour, shape, position, size): 8 x 6 x 5 x 2 = 480 distinct captions."""
    return [(c, s, p, z) for c in COLOURS for s in SHAPES for p in POSITIONS for z in SIZES]


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` given pixel offsets (dx, dy) from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(ax, ay) <= 0.85 * r
    if shape == "diamond":
        return ax + ay <= 1.15 * r
    if shape == "triangle":  # apex up, base below the centre
        return (dy >= -r) & (dy <= 0.75 * r) & (ax <= 0.6 * (dy + r))
    if shape == "cross":
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "bar":
        return (ax <= 1.1 * r) & (ay <= 0.4 * r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _background(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """(F, S, S, 3) float grey clutter: blocky texture drifting over time, fine noise, faint blobs."""
    base = rng.uniform(110, 150)
    tint = rng.uniform(-6, 6, size=3)  # low saturation
    cells = max(2, size // 8)
    texture = rng.uniform(-14, 14, size=(cells, cells))
    texture = np.kron(texture, np.ones((size // cells + 1, size // cells + 1)))[:size, :size]
    shifts = np.cumsum(rng.integers(-1, 2, size=(frames, 2)), axis=0)
    out = np.empty((frames, size, size, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blob_xy = rng.uniform(0, size, size=(3, 2))
    blob_v = rng.uniform(-1.5, 1.5, size=(3, 2))
    blob_sign = rng.choice([-1.0, 1.0], size=3) * rng.uniform(8, 16, size=3)
    for f in range(frames):
        frame = base + np.roll(texture, tuple(shifts[f]), axis=(0, 1))
        for (bx, by), (vx, vy), amp in zip(blob_xy, blob_v, blob_sign, strict=True):
            cx, cy = (bx + vx * f) % size, (by + vy * f) % size
            frame = frame + amp * ((xx - cx) ** 2 + (yy - cy) ** 2 <= (size * 0.12) ** 2)
        out[f] = frame[..., None] + tint
    out += rng.uniform(-8, 8, size=out.shape[:3])[..., None]
    return out


def render(scene: Scene, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """(F, S, S, 3) uint8 RGB frames of one video: distractors everywhere except [start, stop)."""
    video = _background(rng, frames, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fx, fy = POSITIONS[scene.position]
    radius = SIZES[scene.size] * size
    outline = max(1.0, size / 32)
    cx, cy = fx * size + rng.uniform(-2, 2), fy * size + rng.uniform(-2, 2)
    vx, vy = rng.uniform(-0.8, 0.8, size=2)  # a slow drift while visible
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    for t, f in enumerate(range(scene.start, scene.stop)):
        dx, dy = xx - (cx + vx * t), yy - (cy + vy * t)
        video[f][shape_mask(scene.shape, dx, dy, radius + outline)] = 15.0
        video[f][shape_mask(scene.shape, dx, dy, radius)] = colour
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)
