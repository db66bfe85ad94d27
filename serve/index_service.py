"""The ingress's index: the only owner of the video index, and the text encoder of the query path.

It lives inside the ingress replica, so a query is one hop (proxy -> ingress): text -> embedding
(batched across concurrent queries without waiting, serve/batching.py) -> Qdrant search -> hits
with moments. An embedded Edge shard is owned by one process, so the ingress runs exactly one
replica for the edge backend (several are fine against a Qdrant server). Index calls run on one
worker thread: they never block the ingress's event loop, and a check-then-insert is atomic
within the replica.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from adaclip.config import Config
from adaclip.encoding import QueryEncoder, load_active_model, load_serving_model
from adaclip.errors import ConfigError, IndexBusyError, IndexUnavailableError, ModelChangedError
from adaclip.index import (
    KEY_DURATION,
    KEY_MODEL_VERSION,
    KEY_SOURCE,
    KEY_WINDOW,
    KEY_WINDOW_END,
    KEY_WINDOW_START,
    IndexedVideo,
    VideoIndex,
    open_index,
)
from adaclip.index.active import ActiveModel, read_active
from adaclip.models import AdaCLIP
from adaclip.reindex import ReindexReport, reindex_pass, remove_deleted
from serve.batching import Batcher
from serve.encoder import serving_device
from serve.http_errors import log
from serve.media import MediaStore
from serve.schemas import ModelSpec
from serve.streams import StreamStore

T = TypeVar("T")
REOPEN_EVERY_S = 1.0  # at most one attempt to (re)open an unreachable index per this many seconds
EXACT_QUEUE = 4  # exact searches running or waiting per replica; more are answered 503 busy
TEXT_BATCH = 32  # most queries per text-encoder call (the ingress's user_config.max_batch_size overrides it)


def window_info(point_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Which window of its video a point is, and its span in seconds (a point stored before windows
    existed is window 0 spanning the video)."""
    return {
        "index": int(payload.get(KEY_WINDOW, 0)),
        "start": float(payload.get(KEY_WINDOW_START, 0.0)),
        "end": float(payload.get(KEY_WINDOW_END, payload.get(KEY_DURATION) or 0.0)),
        "point_id": point_id,
    }


@dataclass(frozen=True)
class Query:
    text: str
    k: int
    mode: str
    filters: dict[str, Any] | None
    candidates: int | None
    group: bool


def hits_of(index: VideoIndex, serving: Serving, vector: np.ndarray, q: Query) -> list[dict[str, Any]]:
    """Search `index` with a query vector of `serving`'s model: the hits as plain dicts."""
    mcfg = serving.cfg.model
    hits = index.search(
        vector, q.k, q.mode, q.filters, q.candidates, mcfg.qscore_temperature, mcfg.qscore_variant, q.group
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


@dataclass(frozen=True)
class Serving:
    """The model searches embed queries with (its traced text path: `encode`), and what rebuilds
    it (the active record's fields)."""

    cfg: Config  # resolved: the checkpoint's model and data sections
    model: AdaCLIP
    checkpoint: str | None
    seed: int
    encode: QueryEncoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encode", QueryEncoder(self.model, self.cfg.data.max_text_tokens))

    @classmethod
    def load(cls, base_cfg: Config, checkpoint: str | None, seed: int) -> Serving:
        """The model of `checkpoint` (or a random init with `seed`) with its resolved config."""
        return cls(*load_serving_model(base_cfg, checkpoint, serving_device(), seed), checkpoint, seed)

    @property
    def version(self) -> str:
        return self.model.model_version

    def active(self, collection: str) -> ActiveModel:
        return ActiveModel(
            collection=collection, model_version=self.version, checkpoint=self.checkpoint, seed=self.seed
        )


class IndexService:
    """Search, add, get, delete and count videos of the active collection (one model version)."""

    def __init__(
        self,
        spec: dict[str, Any],
        media: MediaStore | None = None,
        streams: StreamStore | None = None,
        max_batch_size: int = TEXT_BATCH,
    ):
        """`media`, `streams`: where a reindex finds the kept files (the ingress's stores)."""
        model_spec = ModelSpec.model_validate(spec)
        self.base_cfg = Config.model_validate(model_spec.config)
        self.serving = Serving.load(self.base_cfg, model_spec.checkpoint, model_spec.seed)
        self.media, self.streams = media, streams
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index")
        self._exact_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-exact")
        self._health_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-health")
        self._exact_waiting = 0
        self._index: VideoIndex | None = None
        self._last_error = "not opened yet"
        self._last_try = 0.0
        self._reindex: dict[str, Any] = {"state": "idle"}
        self._searches = Batcher(self._search_batch, max_batch_size)
        with contextlib.suppress(IndexUnavailableError):  # answered as 503 until it can be opened
            self._open()

    def set_max_batch_size(self, size: int) -> None:
        """Most queries embedded in one model call (the ingress's `user_config`)."""
        self._searches.set_max_batch_size(size)

    # ---- index access ----------------------------------------------------------------------

    def _open(self) -> VideoIndex:
        """The open index, opening it now if needed; IndexUnavailableError while unreachable.

        The index's active record decides the model: a service started with another model than
        the active one follows the record (after `adaclip reindex` the old config may still name
        the old checkpoint); the first service records its own model."""
        if self._index is not None:
            return self._index
        now = time.monotonic()
        if now - self._last_try < REOPEN_EVERY_S:
            raise IndexUnavailableError(f"index unavailable: {self._last_error}")
        self._last_try = now
        serving = self.serving
        try:
            active = read_active(serving.cfg.index)
            if active is not None and active.model_version != serving.version:
                cfg, model = load_active_model(self.base_cfg, active, serving_device())
                log.warning(
                    "serving the index's active model %s, not the configured %s",
                    active.model_version,
                    serving.version,
                )
                serving = Serving(cfg, model, active.checkpoint, active.seed)
            index = open_index(serving.cfg.index, int(serving.model.embed_dim), serving.version)
            if active is None:
                index.backend.write_active(
                    serving.cfg.index.collection_prefix, serving.active(index.backend.collection)
                )
        except IndexUnavailableError as e:
            self._last_error = str(e)
            raise
        self.serving, self._index = serving, index
        return index

    async def _run(self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        """Run `fn(index, *args)` on the index thread (or `pool`)."""

        def call() -> Any:
            return fn(self._open(), *args)

        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, call)

    # ---- API used by the ingress -------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The active model (version, dim, how to rebuild it), backend and window length; answers
        even while the index is unreachable."""
        serving = self.serving
        collection = self._index.backend.collection if self._index is not None else ""
        return {
            "model_version": serving.version,
            "dim": int(serving.model.embed_dim),
            "backend": serving.cfg.index.backend,
            "window_seconds": serving.cfg.index.window_seconds,
            "active": serving.active(collection).model_dump(),
        }

    async def health(self) -> dict[str, Any]:
        """Info and the number of points, read on the health thread: answers while index work is
        queued. Not the number of videos (`stats`): that count filters on a payload field and reads
        every point, too slow for a probe on a large index."""
        points = await self._run(lambda index: index.count_points(), pool=self._health_pool)
        return {**self.info(), "points": points}

    async def stats(self) -> dict[str, Any]:
        return await self._run(lambda index: index.stats())

    async def add(self, windows: list[IndexedVideo]) -> tuple[bool, dict[str, Any]]:
        """Insert a video's windows (window 0 first, its id the video's) unless the video is stored:
        (created, stored payload of window 0). One `created` among racing uploads, also across
        replicas on a Qdrant server (`VideoIndex.insert`). ModelChangedError (503) for vectors of
        another model than the active one."""

        def add(index: VideoIndex) -> tuple[bool, dict[str, Any]]:
            others = {w.payload.get(KEY_MODEL_VERSION) for w in windows} - {None, index.model_version}
            if others:
                raise ModelChangedError(
                    f"vectors of model {sorted(others)} for the index of {index.model_version}; retry"
                )
            return index.insert(windows)

        return await self._run(add)

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
        """Embed `query` and search: hits as plain dicts, one per video (its best window) or,
        without `group`, one per window. `fast` and `rerank` queries are batched: each batch of
        concurrent queries is one trip to the index thread, texts embedded in one model call."""
        q = Query(query, k, mode, filters or None, candidates, group)
        found = await (self._search_exact(q) if mode == "exact" else self._searches(q))
        if isinstance(found, Exception):
            raise found
        return found

    async def _search_batch(self, queries: list[Query]) -> list[list[dict[str, Any]] | Exception]:
        return await self._run(self._answer, queries)

    def _answer(self, index: VideoIndex, queries: list[Query]) -> list[list[dict[str, Any]] | Exception]:
        """On the index thread, where the model switch happens (so model and index agree): embed
        the texts in one model call, then search each; an error stays with its query."""
        serving = self.serving
        vectors = serving.encode([q.text for q in queries])
        answers: list[list[dict[str, Any]] | Exception] = []
        for q, vector in zip(queries, vectors, strict=True):
            try:
                answers.append(hits_of(index, serving, vector, q))
            except Exception as e:  # noqa: BLE001 - handed to that query's caller
                answers.append(e)
        return answers

    async def _search_exact(self, q: Query) -> list[dict[str, Any]]:
        """An exact search on its own thread, at most EXACT_QUEUE running or waiting; one that
        straddles a switch to a new model runs again with it."""
        if self._exact_waiting >= EXACT_QUEUE:
            raise IndexBusyError(f"{EXACT_QUEUE} exact searches are already running or queued; retry later")
        self._exact_waiting += 1
        try:
            for _ in range(3):
                serving = self.serving

                def exact(index: VideoIndex, serving: Serving = serving) -> list[dict[str, Any]] | None:
                    if index.model_version != serving.version:
                        return None
                    vector = serving.encode([q.text])[0]
                    return hits_of(index, serving, vector, q)

                found = await self._run(exact, pool=self._exact_pool)
                if found is not None:
                    return found
            raise ModelChangedError("the index moved to another model during the search; retry")
        finally:
            self._exact_waiting -= 1

    # ---- moving to a new model -------------------------------------------------------------------

    def reindex_status(self) -> dict[str, Any]:
        return dict(self._reindex)

    async def reindex(
        self, checkpoint: str | None, seed: int = 0, allow_missing: bool = False
    ) -> dict[str, Any]:
        """Start moving the index to the model of `checkpoint` (see `_reindex_job`); its status.
        One at a time per replica (run it against one replica: the ingress does)."""
        if self._reindex["state"] == "running":
            return self.reindex_status()
        if self.media is None:
            raise ConfigError("this index deployment was started without a media directory to reindex from")
        self._reindex = {
            "state": "running",
            "checkpoint": checkpoint,
            "from_version": self.serving.version,
            "started": time.time(),
        }
        task = asyncio.get_running_loop().run_in_executor(
            None, self._reindex_job, checkpoint, seed, allow_missing
        )
        task.add_done_callback(self._reindex_done)
        return self.reindex_status()

    def _reindex_done(self, task: asyncio.Future) -> None:
        error = task.exception()
        if error is None:
            self._reindex = {**self._reindex, "state": "done", **task.result()}
        else:
            log.error("reindex failed: %s", error, exc_info=error)
            self._reindex = {**self._reindex, "state": "failed", "error": str(error)}

    def _reindex_job(self, checkpoint: str | None, seed: int, allow_missing: bool) -> dict[str, Any]:
        """Build the new model's collection from the kept files while searches and uploads go on;
        then, on the index thread (writes wait), re-encode what arrived meanwhile, drop what was
        deleted, switch the active record and this service in one step, and release the old
        collection (removable with `adaclip index drop`)."""
        new_serving = Serving.load(self.base_cfg, checkpoint, seed)
        cfg, model = new_serving.cfg, new_serving.model
        old = self._open()
        if new_serving.version == old.model_version:
            return {
                "to": new_serving.version,
                "copied": 0,
                "present": old.count(),
                "missing": {},
                "removed": 0,
            }
        new = open_index(self.serving.cfg.index, int(model.embed_dim), new_serving.version)
        try:
            report = reindex_pass(old, new, model, cfg, self._find_media)
            self._link_media(report)

            def switch(old: VideoIndex) -> dict[str, Any]:
                final = reindex_pass(old, new, model, cfg, self._find_media)
                self._link_media(final)
                removed = remove_deleted(new, final.moved)
                if final.missing and not allow_missing:
                    raise ConfigError(
                        f"{len(final.missing)} videos cannot be re-encoded (not switched; rerun with "
                        f"allow_missing to leave them out): {dict(list(final.missing.items())[:5])}"
                    )
                new.backend.write_active(
                    cfg.index.collection_prefix, new_serving.active(new.backend.collection)
                )
                self.serving, self._index = new_serving, new
                if self.media is not None:
                    for old_id, new_id in final.moved.items():
                        if old_id != new_id and old_id not in final.missing:
                            self.media.unlink(old_id)
                self._exact_pool.submit(old.close)  # after a running exact search over it
                return {
                    "copied": report.copied + final.copied,
                    "missing": final.missing,
                    "removed": len(removed),
                }

            switched = self._pool.submit(lambda: switch(self._open())).result()
        except BaseException:
            if self._index is not new:
                new.close()
            raise
        return {
            "to": new_serving.version,
            "collection": new.backend.collection,
            "present": report.present,
            **switched,
        }

    def _find_media(self, video: str, payload: dict[str, Any]) -> Path | None:
        """A stored video's kept file: the uploaded copy, a live stream's file, or (bulk
        ingestion) the source path."""
        found = self.media.find(video) if self.media is not None else None
        if found is None and self.streams is not None:
            found = self.streams.media(video)
        source = Path(str(payload.get(KEY_SOURCE) or ""))
        if found is None and source.is_absolute() and source.is_file():
            found = source
        return found

    def _link_media(self, report: ReindexReport) -> None:
        if self.media is not None:
            for old_id, new_id in report.moved.items():
                if old_id != new_id:
                    self.media.link(old_id, new_id)

    def close(self) -> None:
        """Flush and release the shard for the next owner (the ingress calls it on shutdown)."""
        index, self._index = getattr(self, "_index", None), None
        if index is not None:
            with contextlib.suppress(Exception):  # closing at shutdown must not raise
                index.close()
