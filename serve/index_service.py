"""Index deployment: the only owner of the video index, and the text encoder of the query path.

Holding the text encoder here keeps a query to one hop (ingress -> this deployment): text ->
embedding (`@serve.batch` across requests) -> Qdrant search -> hits with moments. An embedded Edge
shard is owned by one process, so this deployment runs exactly one replica for the edge backend
(several are fine against a Qdrant server). Index calls run on one worker thread: they never block
the event loop that gathers text batches, and a check-then-insert is atomic within the replica.
Work that could hold that thread for long stays off it: `exact` searches (a scan of the whole
collection) run on their own thread, at most EXACT_QUEUE at a time (more are 503 busy), and health
checks on another, so neither an exact search nor a long write delays uploads or `/healthz`.

The index is opened lazily and re-opened on demand, so the app starts (and answers 503 with
Retry-After) while a Qdrant server is down, and a restart waits out the previous owner's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from ray import serve

from adaclip.config import Config
from adaclip.encoding import encode_queries, load_encoder_model, resolve_config
from adaclip.errors import IndexBusyError, IndexUnavailableError
from adaclip.index import (
    KEY_DURATION,
    KEY_WINDOW,
    KEY_WINDOW_END,
    KEY_WINDOW_START,
    IndexedVideo,
    VideoIndex,
    open_index,
)
from serve.encoder import serving_device
from serve.schemas import BatchConfig, ModelSpec

T = TypeVar("T")
REOPEN_EVERY_S = 1.0  # at most one attempt to (re)open an unreachable index per this many seconds
EXACT_QUEUE = 4  # exact searches running or waiting per replica; more are answered 503 busy


def window_info(point_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Which window of its video a point is, and its span in seconds (a point stored before windows
    existed is window 0 spanning the video)."""
    return {
        "index": int(payload.get(KEY_WINDOW, 0)),
        "start": float(payload.get(KEY_WINDOW_START, 0.0)),
        "end": float(payload.get(KEY_WINDOW_END, payload.get(KEY_DURATION) or 0.0)),
        "point_id": point_id,
    }


@serve.deployment(
    name="IndexService",
    num_replicas=1,
    max_ongoing_requests=64,
    max_queued_requests=512,
    ray_actor_options={"num_cpus": 0.4},
)
class IndexService:
    """Search, add, get, delete and count videos of one collection (one model version)."""

    def __init__(self, spec: dict[str, Any]):
        model_spec = ModelSpec.model_validate(spec)
        self.cfg = resolve_config(Config.model_validate(model_spec.config), model_spec.checkpoint)
        self.model = load_encoder_model(self.cfg, model_spec.checkpoint, serving_device(), model_spec.seed)
        self.model_version = self.model.model_version
        self.dim = int(self.model.embed_dim)
        self.temperature = self.cfg.model.qscore_temperature
        self.variant = self.cfg.model.qscore_variant
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index")
        self._exact_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-exact")
        self._health_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-health")
        self._exact_waiting = 0
        self._index: VideoIndex | None = None
        self._last_error = "not opened yet"
        self._last_try = 0.0
        with contextlib.suppress(IndexUnavailableError):  # answered as 503 until it can be opened
            self._open()

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        batch = BatchConfig.model_validate(user_config or {})
        self._embed.set_max_batch_size(batch.max_batch_size)
        self._embed.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    # ---- index access ----------------------------------------------------------------------

    def _open(self) -> VideoIndex:
        """The open index, opening it now if needed; IndexUnavailableError while unreachable."""
        if self._index is not None:
            return self._index
        now = time.monotonic()
        if now - self._last_try < REOPEN_EVERY_S:
            raise IndexUnavailableError(f"index unavailable: {self._last_error}")
        self._last_try = now
        try:
            self._index = open_index(self.cfg.index, self.dim, self.model_version)
        except IndexUnavailableError as e:
            self._last_error = str(e)
            raise
        return self._index

    async def _run(self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        """Run `fn(index, *args)` on the index thread (or `pool`)."""

        def call() -> Any:
            return fn(self._open(), *args)

        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, call)

    # ---- text ------------------------------------------------------------------------------

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed(self, texts: list[str]) -> list[np.ndarray]:
        vectors = await asyncio.to_thread(
            encode_queries, self.model, texts, self.cfg.data.max_text_tokens
        )  # (T, D)
        return list(vectors)

    # ---- API used by the ingress -------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Model version, dim and backend; answers even while the index is unreachable."""
        return {
            "model_version": self.model_version,
            "dim": self.dim,
            "backend": self.cfg.index.backend,
            "window_seconds": self.cfg.index.window_seconds,
        }

    async def health(self) -> dict[str, Any]:
        """Info and the count, read on the health thread: answers while index work is queued."""
        count = await self._run(lambda index: index.count(), pool=self._health_pool)
        return {**self.info(), "count": count}

    async def stats(self) -> dict[str, Any]:
        return await self._run(lambda index: index.stats())

    async def add(self, windows: list[IndexedVideo]) -> tuple[bool, dict[str, Any]]:
        """Insert a video's windows (window 0 first, its id the video's) unless the video is stored:
        (created, stored payload of window 0). One `created` among racing uploads, also across
        replicas on a Qdrant server (`VideoIndex.insert`)."""
        return await self._run(lambda index: index.insert(windows))

    async def get(self, video: str) -> dict[str, Any] | None:
        """A stored video: window 0's payload, its frame count and every window's span."""
        found = await self._run(lambda index: index.windows(video))
        if not found:
            return None
        return {
            "id": found[0].id,
            "payload": found[0].payload,
            "num_frames": int(len(found[0].frames)),
            "windows": [window_info(w.id, w.payload) for w in found],
        }

    async def delete(self, point_id: str) -> bool:
        return await self._run(lambda index: index.delete(point_id))

    async def search(
        self,
        query: str,
        k: int,
        mode: str,
        filters: dict[str, Any] | None = None,
        candidates: int | None = None,
        group: bool = True,
    ) -> list[dict[str, Any]]:
        """Embed `query` (batched with concurrent queries) and search: hits as plain dicts, one per
        video (its best window) or, without `group`, one per window."""
        vector = await self._embed(query)

        def search(index: VideoIndex) -> list[dict[str, Any]]:
            hits = index.search(
                vector, k, mode, filters or None, candidates, self.temperature, self.variant, group
            )
            return [
                {
                    "id": h.video,
                    "score": h.score,
                    "moment": h.moment,
                    "frame_index": h.frame_index,
                    "window": window_info(h.id, h.payload),
                    "payload": h.payload,
                }
                for h in hits
            ]

        if mode != "exact":
            return await self._run(search)
        if self._exact_waiting >= EXACT_QUEUE:
            raise IndexBusyError(f"{EXACT_QUEUE} exact searches are already running or queued; retry later")
        self._exact_waiting += 1
        try:
            return await self._run(search, pool=self._exact_pool)
        finally:
            self._exact_waiting -= 1

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown: flush and release the shard for the next owner."""
        index, self._index = getattr(self, "_index", None), None
        if index is not None:
            with contextlib.suppress(Exception):  # closing at shutdown must not raise
                index.close()
