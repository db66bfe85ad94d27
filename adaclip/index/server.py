"""Server backend: qdrant-client against a Qdrant server or cluster (`url`, `api_key`).

`url=":memory:"` selects qdrant-client's pure-Python local mode, for tests only. Every failure to
reach the server (refused, timeout, 5xx, bad credentials) surfaces as `IndexUnavailableError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from adaclip.config import IndexConfig
from adaclip.errors import ConfigError, IndexUnavailableError
from adaclip.index.active import ActiveModel, read_alias, switch_alias
from adaclip.index.base import (
    FRAMES_VECTOR,
    KEY_FRAMES,
    KEY_WINDOW,
    KEYWORD_FIELDS,
    VIDEO_VECTOR,
    FilterValue,
    IndexBackend,
    IndexedVideo,
    StoredPoint,
    stored_payload,
    stored_point,
)

UPSERT_BATCH = 64  # one request carries K frame vectors per point: keep requests small
MEMORY = ":memory:"


def vectors_config(dim: int) -> dict[str, models.VectorParams]:
    """Same schema as the Edge backend: `video` cosine + HNSW; the frame vectors in the payload."""
    return {VIDEO_VECTOR: models.VectorParams(size=dim, distance=models.Distance.COSINE)}


def _filter(filters: dict[str, FilterValue] | None) -> models.Filter | None:
    if not filters:
        return None
    return models.Filter(
        must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in filters.items()]
    )


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Translate transport failures into IndexUnavailableError naming the server."""
    try:
        yield
    except UnexpectedResponse as e:
        if e.status_code is not None and (e.status_code >= 500 or e.status_code in (401, 403, 429)):
            raise IndexUnavailableError(
                f"Qdrant at {url} answered {e.status_code} (check QDRANT_API_KEY on 401/403): {e}"
            ) from e
        raise
    except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as e:
        raise IndexUnavailableError(f"Qdrant at {url} is unreachable: {e}") from e


def make_client(url: str, api_key: str | None, timeout_s: float) -> QdrantClient:
    if url == MEMORY:
        return QdrantClient(location=MEMORY)
    return QdrantClient(
        url=url, api_key=api_key, timeout=max(1, math.ceil(timeout_s)), check_compatibility=False
    )


@contextmanager
def server_client(cfg: IndexConfig) -> Iterator[QdrantClient]:
    """A client of the configured server, closed after use (for commands that open no collection)."""
    from adaclip.index import server_address

    url, api_key = server_address(cfg)
    client = make_client(url, api_key, cfg.timeout_s)
    try:
        with reachable(url):
            yield client
    finally:
        client.close()


class ServerBackend(IndexBackend):
    """One collection on a Qdrant server, created (with keyword payload indexes) if missing."""

    name = "server"

    def __init__(
        self,
        url: str,
        api_key: str | None,
        collection: str,
        dim: int,
        timeout_s: float = 10.0,
        layout: dict[str, int] | None = None,
        frame_datatype: str = "float32",
        frames_on_disk: bool = False,
    ):
        """`layout`: shard_number, replication_factor, write_consistency_factor of a new collection."""
        self.collection = collection
        self.url = url
        self.layout = layout or {}
        self.frame_datatype = frame_datatype
        self.frames_on_disk = frames_on_disk
        self.client = make_client(url, api_key, timeout_s)
        self._ensure_collection(dim)

    def _reachable(self) -> AbstractContextManager[None]:
        return reachable(self.url)

    def _ensure_collection(self, dim: int) -> None:
        with self._reachable():
            if self.client.collection_exists(self.collection):
                vectors = self.client.get_collection(self.collection).config.params.vectors
                self.older_frames = FRAMES_VECTOR in vectors  # written before KEY_FRAMES: read it
                size = vectors[VIDEO_VECTOR].size
                if size != dim:
                    raise ConfigError(
                        f"collection {self.collection!r} at {self.url} holds dim={size} vectors, the model gives "
                        f"dim={dim}; use another collection_prefix or model version"
                    )
                return
            try:
                self.client.create_collection(
                    self.collection,
                    vectors_config=vectors_config(dim),
                    on_disk_payload=self.frames_on_disk or None,  # else the server's default
                    **self.layout,
                )
            except UnexpectedResponse as e:
                if e.status_code != 409:  # 409: another replica created it first
                    raise
            if self.url != MEMORY:  # local mode ignores payload indexes (and warns)
                for key in KEYWORD_FIELDS:
                    self.client.create_payload_index(
                        self.collection, key, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
                    )

    def upsert(self, items: Sequence[IndexedVideo]) -> None:
        with self._reachable():
            for start in range(0, len(items), UPSERT_BATCH):
                points = [self._point(it) for it in items[start : start + UPSERT_BATCH]]
                self.client.upsert(self.collection, points=points, wait=True)

    def insert_only(self, item: IndexedVideo) -> None:
        """Qdrant's insert-only write: atomic on the server, whichever replica races."""
        with self._reachable():
            self.client.upsert(
                self.collection,
                points=[self._point(item)],
                wait=True,
                update_mode=models.UpdateMode.INSERT_ONLY,
            )

    def _point(self, item: IndexedVideo) -> models.PointStruct:
        """The stored form of `item`: its video vector, its frame vectors in the payload."""
        return models.PointStruct(
            id=item.id,
            vector={VIDEO_VECTOR: item.video.tolist()},
            payload=stored_payload(item, self.frame_datatype),
        )

    def retrieve(self, ids: Sequence[str], with_payload: bool, with_vectors: bool) -> list[StoredPoint]:
        with self._reachable():
            records = self.client.retrieve(
                self.collection,
                ids=list(ids),
                with_payload=self._payload(with_payload, with_vectors),
                with_vectors=self._vectors(with_vectors, with_vectors),
            )
        return [stored_point(r) for r in records]

    def _frames_selector(self, include: bool) -> models.PayloadSelector:
        if include:
            return models.PayloadSelectorInclude(include=[KEY_FRAMES])
        return models.PayloadSelectorExclude(exclude=[KEY_FRAMES])

    def delete(self, ids: Sequence[str]) -> None:
        with self._reachable():
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )

    def count(self, videos_only: bool = False) -> int:
        later = models.Filter(must_not=[models.FieldCondition(key=KEY_WINDOW, range=models.Range(gt=0))])
        with self._reachable():
            return self.client.count(
                self.collection, count_filter=later if videos_only else None, exact=True
            ).count

    def nearest(
        self, query: np.ndarray, limit: int, filters: dict[str, FilterValue] | None, frames: bool = True
    ) -> list[StoredPoint]:
        with self._reachable():
            result = self.client.query_points(
                self.collection,
                query=query.tolist(),
                using=VIDEO_VECTOR,
                limit=limit,
                query_filter=_filter(filters),
                with_payload=self._payload(True, frames),
                with_vectors=self._vectors(False, frames),
            )
        return [stored_point(p) for p in result.points]

    def scan(
        self, filters: dict[str, FilterValue] | None, page_size: int, frames: bool = True
    ) -> Iterator[list[StoredPoint]]:
        offset = None
        while True:
            with self._reachable():
                records, offset = self.client.scroll(
                    self.collection,
                    scroll_filter=_filter(filters),
                    limit=page_size,
                    offset=offset,
                    with_payload=self._payload(True, frames),
                    with_vectors=self._vectors(False, frames),
                )
            if records:
                yield [stored_point(r) for r in records]
            if offset is None:
                return

    def read_active(self, alias: str) -> ActiveModel | None:
        with self._reachable():
            return read_alias(self.client, alias)

    def write_active(self, alias: str, active: ActiveModel) -> None:
        with self._reachable():
            switch_alias(self.client, alias, active)

    def info(self) -> dict[str, Any]:
        return {}  # not the URL: /stats is public and the address of the database is not its business

    def close(self) -> None:
        self.client.close()
