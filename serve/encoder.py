"""Video encoder deployment: staged file -> N cheap views -> selector keeps K -> CLIP on K -> vector.

Decoding runs per request on a bounded pool of DECODE_THREADS threads apart from the model (so a few
uploads decode at once, a flood of them queues instead of starving encoding, and each decode is cut
off at the decoder's per-file deadline); the model runs on batches of windows gathered across
requests while the previous batch runs (serve/batching.py), at most `user_config.max_batch_size`.
A file that does not decode comes back as an `EncodeOutcome` with the reason (not an exception:
the ingress turns it into a 415 and nothing is written).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import serve

from adaclip.config import Config
from adaclip.encoding import (
    EncodedVideo,
    decode_for_model,
    decode_windows_for_model,
    encode_decoded,
    load_active_model,
    load_serving_model,
)
from adaclip.errors import ModelChangedError, VideoDecodeError
from adaclip.index.active import ActiveModel
from adaclip.video.decode import DecodedVideo
from serve.batching import Batcher
from serve.schemas import BatchConfig, ModelSpec

DECODE_THREADS = 2  # concurrent decodes per replica
VIDEO_BATCH = 8  # most windows per model call (user_config.max_batch_size overrides it)


@dataclass
class EncodeOutcome:
    """Either the encoded video (one item per window, in order) or why it could not be decoded."""

    windows: list[EncodedVideo] | None = None
    error: str | None = None
    model_version: str = ""  # the model that encoded it


def serving_device() -> str:
    """The GPU Ray gave this replica (ray_actor_options num_gpus), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment(
    name="VideoEncoder",
    max_ongoing_requests=16,
    max_queued_requests=64,
    ray_actor_options={"num_cpus": 0.5},  # + one GPU when the cluster has one (serve.app)
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
    user_config={"max_batch_size": VIDEO_BATCH},
)
class VideoEncoder:
    """Encodes videos given as paths to staged files (never file objects: those do not pickle)."""

    def __init__(self, spec: dict[str, Any]):
        model_spec = ModelSpec.model_validate(spec)
        self.base_cfg = Config.model_validate(model_spec.config)
        self.cfg, self.model = load_serving_model(
            self.base_cfg, model_spec.checkpoint, serving_device(), model_spec.seed
        )
        self._model_lock = asyncio.Lock()
        self._decode_pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")
        self._encode_batch = Batcher(self._encode_windows, VIDEO_BATCH)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply `user_config` batch settings live (Serve calls this on start and on config change)."""
        self._encode_batch.set_max_batch_size(BatchConfig.model_validate(user_config or {}).max_batch_size)

    async def _decode(self, decode: Callable[[str, Config], Any], path: str) -> Any:
        """`decode(path, cfg)` on the bounded decode pool."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, decode, path, self.cfg)

    async def _follow(self, active: dict[str, Any] | None) -> None:
        """Load the index's active model (`adaclip.index.active`) when it is not this one's: the
        index moved to a new model (`adaclip reindex`) or was already on one at start."""
        if active is None or active["model_version"] == self.model.model_version:
            return
        async with self._model_lock:
            if active["model_version"] != self.model.model_version:
                self.cfg, self.model = await asyncio.to_thread(
                    load_active_model, self.base_cfg, ActiveModel.model_validate(active), serving_device()
                )

    async def encode(self, path: str, active: dict[str, Any] | None = None) -> EncodeOutcome:
        """Decode and encode the video at `path` (a staged upload or a file below an ingest root),
        window by window, with the index's `active` model; windows of this and other requests
        share model batches."""
        await self._follow(active)
        try:
            decoded = await self._decode(decode_windows_for_model, path)
        except VideoDecodeError as e:
            return EncodeOutcome(error=e.reason)
        encoded = await asyncio.gather(*map(self._encode_batch, decoded))
        return self._outcome(encoded)

    async def encode_window(
        self, path: str, start: float, window: int, active: dict[str, Any] | None = None
    ) -> EncodeOutcome:
        """Encode a file holding exactly one window of a live stream (its segments), which begins
        `start` seconds into the stream: the same N-frame sample as that window of the whole file."""
        await self._follow(active)
        try:
            decoded = await self._decode(decode_for_model, path)
        except VideoDecodeError as e:
            return EncodeOutcome(error=e.reason)
        shifted = dataclasses.replace(
            decoded,
            indices=decoded.indices + round(start * decoded.fps),
            timestamps=decoded.timestamps + np.float32(start),
            duration=start + decoded.duration,
            window=window,
            num_windows=0,  # a live stream's count is not known yet
            window_start=start,
            window_end=start + decoded.duration,
        )
        return self._outcome([await self._encode_batch(shifted)])

    @staticmethod
    def _outcome(encoded: list[tuple[str, EncodedVideo]]) -> EncodeOutcome:
        versions = {version for version, _ in encoded}
        if len(versions) != 1:
            raise ModelChangedError("the encoder moved to another model while encoding; retry")
        return EncodeOutcome(windows=[w for _, w in encoded], model_version=versions.pop())

    async def _encode_windows(self, decoded: list[DecodedVideo]) -> list[tuple[str, EncodedVideo]]:
        """(model version, encoded window) of each window, all by one model."""
        model = self.model
        encoded = await asyncio.to_thread(encode_decoded, model, decoded)
        return [(model.model_version, e) for e in encoded]

    def model_version(self) -> str:
        return self.model.model_version
