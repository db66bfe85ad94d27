"""Video encoder deployment: staged file -> N cheap views -> selector keeps K -> CLIP on K -> vector.

Decoding runs per request on a bounded pool of DECODE_THREADS threads apart from the model (so a few
uploads decode at once, a flood of them queues instead of starving encoding, and each decode is cut
off at the decoder's per-file deadline); the model runs on batches gathered across requests by
`@serve.batch`, whose size and wait come from `user_config`.
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
    load_encoder_model,
    resolve_config,
)
from adaclip.errors import VideoDecodeError
from adaclip.video.decode import DecodedVideo
from serve.schemas import BatchConfig, ModelSpec

DECODE_THREADS = 2  # concurrent decodes per replica


@dataclass
class EncodeOutcome:
    """Either the encoded video (one item per window, in order) or why it could not be decoded."""

    windows: list[EncodedVideo] | None = None
    error: str | None = None


def serving_device() -> str:
    """The GPU Ray gave this replica (ray_actor_options num_gpus), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment(
    name="VideoEncoder", max_ongoing_requests=16, max_queued_requests=64, ray_actor_options={"num_cpus": 0.5}
)
class VideoEncoder:
    """Encodes videos given as paths to staged files (never file objects: those do not pickle)."""

    def __init__(self, spec: dict[str, Any]):
        model_spec = ModelSpec.model_validate(spec)
        self.cfg = resolve_config(Config.model_validate(model_spec.config), model_spec.checkpoint)
        self.model = load_encoder_model(self.cfg, model_spec.checkpoint, serving_device(), model_spec.seed)
        self._decode_pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply `user_config` batch settings live (Serve calls this on start and on config change)."""
        batch = BatchConfig.model_validate(user_config or {})
        self._encode_batch.set_max_batch_size(batch.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    async def _decode(self, decode: Callable[[str, Config], Any], path: str) -> Any:
        """`decode(path, cfg)` on the bounded decode pool."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, decode, path, self.cfg)

    async def encode(self, path: str) -> EncodeOutcome:
        """Decode and encode the video at `path` (a staged upload or a file below an ingest root),
        window by window; windows of this and other requests share model batches."""
        try:
            decoded = await self._decode(decode_windows_for_model, path)
        except VideoDecodeError as e:
            return EncodeOutcome(error=e.reason)
        return EncodeOutcome(windows=list(await asyncio.gather(*map(self._encode_batch, decoded))))

    async def encode_window(self, path: str, start: float, window: int) -> EncodeOutcome:
        """Encode a file holding exactly one window of a live stream (its segments), which begins
        `start` seconds into the stream: the same N-frame sample as that window of the whole file."""
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
        return EncodeOutcome(windows=[await self._encode_batch(shifted)])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _encode_batch(self, decoded: list[DecodedVideo]) -> list[EncodedVideo]:
        return await asyncio.to_thread(encode_decoded, self.model, decoded)

    def model_version(self) -> str:
        return self.model.model_version
