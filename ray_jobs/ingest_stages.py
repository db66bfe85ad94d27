"""Ray Data stages of bulk ingestion: decode (CPU workers), encode (actor pool, GPU if any).

Callable classes load their state once in `__init__` and map a dict of numpy arrays to a dict of
numpy arrays, so each is testable on a plain dict without Ray. The maths is `adaclip.encoding`'s,
shared with the Serve app.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from adaclip.config import Config
from adaclip.encoding import decode_for_model, encode_decoded, load_encoder_model
from adaclip.errors import VideoDecodeError
from adaclip.video.decode import DecodedVideo


class DecodeVideos:
    """Decode each row's file into the model's two uint8 views; failures go to the error tally."""

    def __init__(self, config: dict[str, Any], tally_name: str | None = None):
        self.cfg = Config.model_validate(config)
        self.tally_name = tally_name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep, decoded, failures = [], [], {}
        for i, path in enumerate(batch["path"]):
            try:
                decoded.append(decode_for_model(str(path), self.cfg))
                keep.append(i)
            except VideoDecodeError as e:
                failures[str(path)] = e.reason
        if self.tally_name:
            ray.get_actor(self.tally_name).record.remote([str(p) for p in batch["path"]], failures)
        out = {key: np.asarray(values)[keep] for key, values in batch.items()}
        n, s, t = self.cfg.model.num_frames, self.cfg.data.clip_size, self.cfg.model.selector.input_size
        c = 1 if self.cfg.model.selector.grayscale else 3
        out["clip_frames"] = _stack([d.clip_frames for d in decoded], (0, n, s, s, 3), np.uint8)
        out["selector_frames"] = _stack([d.selector_frames for d in decoded], (0, n, t, t, c), np.uint8)
        out["indices"] = _stack([d.indices for d in decoded], (0, n), np.int64)
        out["timestamps"] = _stack([d.timestamps for d in decoded], (0, n), np.float32)
        out["duration"] = np.array([d.duration for d in decoded], dtype=np.float64)
        out["fps"] = np.array([d.fps for d in decoded], dtype=np.float64)
        out["num_video_frames"] = np.array([d.num_video_frames for d in decoded], dtype=np.int64)
        return out


def _stack(arrays: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.stack(arrays).astype(dtype, copy=False) if arrays else np.zeros(empty_shape, dtype)


class EncodeVideos:
    """Encode decoded rows with the model (loaded once per actor; GPU when Ray gave it one)."""

    PASS = ("path", "sha256", "source", "title", "metadata")

    def __init__(self, config: dict[str, Any], checkpoint: str | None, seed: int):
        import torch

        self.cfg = Config.model_validate(config)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_encoder_model(self.cfg, checkpoint, device, seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = [
            DecodedVideo(
                clip_frames=batch["clip_frames"][i],
                selector_frames=batch["selector_frames"][i],
                indices=batch["indices"][i],
                timestamps=batch["timestamps"][i],
                duration=float(batch["duration"][i]),
                fps=float(batch["fps"][i]),
                num_video_frames=int(batch["num_video_frames"][i]),
            )
            for i in range(len(batch["path"]))
        ]
        encoded = encode_decoded(self.model, decoded)
        dim, k = self.model.embed_dim, self.cfg.model.kept_frames
        out = {key: batch[key] for key in self.PASS}
        out["video"] = _stack([e.video for e in encoded], (0, dim), np.float32)
        out["frames"] = _stack([e.frames for e in encoded], (0, k, dim), np.float32)
        out["frame_indices"] = _stack([e.frame_indices for e in encoded], (0, k), np.int64)
        out["frame_timestamps"] = _stack([e.frame_timestamps for e in encoded], (0, k), np.float64)
        for key in ("duration", "fps", "num_video_frames"):
            out[key] = batch[key]
        return out
