"""How a config becomes decode settings: the one place that says which pixels a model reads.

Training, evaluation, bulk ingestion, the Serve app and the decoded-frame store all build their
`DecodeSettings` here, so a change of sampling or frame size never needs edits in several places.
The settings are also the frame store's key: anything that changes the decoded pixels is a field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaclip.config import Config
from adaclip.video.decode import DecodedVideo, decode_video
from adaclip.video.windows import decode_windows

MAX_STORED_FRAMES = 512


class DecodeSettings(BaseModel):
    """Which frames of a video are decoded and at what sizes (see `decode_video`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_frames: int = Field(ge=1)
    sampling: Literal["segment", "uniform", "random"]
    clip_size: int = Field(ge=8)
    selector_size: int = Field(ge=8)
    grayscale: bool
    window_seconds: float | None = Field(default=None, gt=0, description="None: one sample per video")
    window_overlap_seconds: float = Field(default=0.0, ge=0)

    @classmethod
    def from_config(cls, cfg: Config, train: bool) -> DecodeSettings:
        """Training uses `data.train_sampling`; evaluation and indexing `data.eval_sampling`, never
        random (an index must give the same vector for the same bytes)."""
        sampling = cfg.data.train_sampling if train else cfg.data.eval_sampling
        if not train and sampling == "random":
            sampling = "segment"
        return cls(
            num_frames=cfg.model.num_frames,
            sampling=sampling,
            clip_size=cfg.data.clip_size,
            selector_size=cfg.model.selector.input_size,
            grayscale=cfg.model.selector.grayscale,
        )

    @classmethod
    def for_index(cls, cfg: Config) -> DecodeSettings:
        """What the index reads: evaluation's frames, per window of `index.window_seconds`."""
        return cls.from_config(cfg, train=False).model_copy(
            update={
                "window_seconds": cfg.index.window_seconds,
                "window_overlap_seconds": cfg.index.window_overlap_seconds,
            }
        )

    def stored(self, pool_factor: int) -> DecodeSettings:
        """What a decoded-frame store keeps for these settings.

        Deterministic sampling stores exactly the N frames. Random sampling stores a pool of
        `pool_factor` x N segment frames, from which every epoch draws a new sorted N
        (`draw_frames`), so stored frames still give each epoch different frames.
        """
        if self.sampling != "random":
            return self
        pool = min(MAX_STORED_FRAMES, max(self.num_frames, self.num_frames * pool_factor))
        return self.model_copy(update={"num_frames": pool, "sampling": "segment"})

    def key(self) -> str:
        """A short stable name for these settings (the store folder's name)."""
        fields = self.model_dump(exclude_defaults=True)  # settings without windows keep their old name
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def columns(self, videos: Sequence[DecodedVideo]) -> dict[str, np.ndarray]:
        """Stack decoded videos into batch columns (`DecodedVideo.from_columns` reverses it); no
        videos give empty columns of the right shapes, so a batch where every file failed keeps
        its schema."""
        n, s, t = self.num_frames, self.clip_size, self.selector_size
        empty = {
            "clip_frames": np.zeros((0, n, s, s, 3), np.uint8),
            "selector_frames": np.zeros((0, n, t, t, 1 if self.grayscale else 3), np.uint8),
            "indices": np.zeros((0, n), np.int64),
            "timestamps": np.zeros((0, n), np.float32),
        }
        out = {
            name: np.stack([getattr(v, name) for v in videos]).astype(array.dtype, copy=False)
            if videos
            else array
            for name, array in empty.items()
        }
        out["duration"] = np.array([v.duration for v in videos], dtype=np.float64)
        out["fps"] = np.array([v.fps for v in videos], dtype=np.float64)
        out["num_video_frames"] = np.array([v.num_video_frames for v in videos], dtype=np.int64)
        if self.window_seconds is not None:
            out["window"] = np.array([v.window for v in videos], dtype=np.int64)
            out["num_windows"] = np.array([v.num_windows for v in videos], dtype=np.int64)
            out["window_start"] = np.array([v.span[0] for v in videos], dtype=np.float64)
            out["window_end"] = np.array([v.span[1] for v in videos], dtype=np.float64)
        return out

    def decode_all(self, path: str | Path) -> list[DecodedVideo]:
        """Every window of one file (one item without windows); raises VideoDecodeError."""
        if self.window_seconds is None:
            return [self.decode(path)]
        return list(
            decode_windows(
                path,
                self.num_frames,
                self.window_seconds,
                self.window_overlap_seconds,
                self.sampling,
                self.clip_size,
                self.selector_size,
                self.grayscale,
            )
        )

    def decode(self, path: str | Path, rng: np.random.Generator | None = None) -> DecodedVideo:
        """Decode one file as one sample; raises VideoDecodeError for any unusable input."""
        return decode_video(
            path,
            num_frames=self.num_frames,
            sampling=self.sampling,
            clip_size=self.clip_size,
            selector_size=self.selector_size,
            selector_grayscale=self.grayscale,
            rng=rng,
        )


def draw_frames(stored: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of N frames drawn from a stored pool, distinct and sorted (SPEC section 1's random
    sampling, over the pool instead of every frame of the file)."""
    if stored <= num_frames:
        return np.arange(stored)
    return np.sort(rng.choice(stored, size=num_frames, replace=False))
