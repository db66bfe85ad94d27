"""Embedded backend: Qdrant Edge, the Qdrant engine in-process on a directory (WAL, HNSW, no server).

A shard is owned by one process (its WAL is locked); in Serve exactly one index deployment opens
it. Edge runs no background optimiser, so this backend optimises after every `optimize_every`
written points and whenever `optimize()` is called (bulk ingestion does it at the end).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from adaclip.errors import ConfigError, IndexUnavailableError
from adaclip.index.active import ActiveModel, read_record_file, write_record_file
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

UPSERT_BATCH = 256
EDGE_DATATYPES = {"float32": qe.VectorStorageDatatype.Float32, "float16": qe.VectorStorageDatatype.Float16}
OPTIMIZE_EVERY = 5000


def shard_config(
    dim: int, frames_on_disk: bool = False, older_frames_datatype: str | None = None
) -> qe.EdgeConfig:
    """`video`: cosine with HNSW; the payload, which holds the frame vectors (KEY_FRAMES), loaded
    into RAM, or with `frames_on_disk` memory-mapped and paged in as reranks read it (Edge's `Cold`).
    `older_frames_datatype`: a shard written before KEY_FRAMES, with frame vectors of that datatype
    in a `frames` multivector (dot, MAX_SIM, no HNSW), as it was configured then."""
    memory = qe.Memory.Cold if frames_on_disk else None
    vectors = {VIDEO_VECTOR: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)}
    if older_frames_datatype is not None:
        vectors[FRAMES_VECTOR] = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Dot,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
            datatype=EDGE_DATATYPES[older_frames_datatype],
            memory=memory,
        )
    return qe.EdgeConfig(vectors=vectors, payload_memory=memory or qe.Memory.Cached)


def _filter(filters: dict[str, FilterValue] | None) -> qe.Filter | None:
    if not filters:
        return None
    return qe.Filter(must=[qe.FieldCondition(key, match=qe.MatchValue(v)) for key, v in filters.items()])


class EdgeBackend(IndexBackend):
    """One Edge shard at `root / collection`, created on first use and reloaded afterwards."""

    name = "edge"

    def __init__(
        self,
        root: Path,
        collection: str,
        dim: int,
        optimize_every: int = OPTIMIZE_EVERY,
        frame_datatype: str = "float32",
        frames_on_disk: bool = False,
    ):
        self.collection = collection
        self.path = Path(root) / collection
        self.optimize_every = optimize_every
        self.frame_datatype = frame_datatype
        self._unoptimized = 0
        self._shard: qe.EdgeShard | None = None
        try:
            if self.path.is_dir() and any(self.path.iterdir()):
                self._shard = self._load(dim, frames_on_disk)
            else:
                self._shard = qe.EdgeShard.create(str(self.path), shard_config(dim, frames_on_disk))
                for key in KEYWORD_FIELDS:
                    self._shard.update(
                        qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword)
                    )
                self._shard.flush()
        except Exception as e:
            if "incompatible" in str(e).lower():
                raise ConfigError(
                    f"the index at {self.path} was built with other vector settings than dim={dim}: {e}; "
                    "use another index.path or collection_prefix, or re-ingest"
                ) from e
            raise IndexUnavailableError(
                f"cannot open the Qdrant Edge shard at {self.path}: {e} "
                "(a shard is owned by one process: is another one using it?)"
            ) from e

    def _load(self, dim: int, frames_on_disk: bool) -> qe.EdgeShard:
        """The shard at `path`, as written now or, failing that, as written before KEY_FRAMES (Edge
        checks a config against the stored one and says "incompatible", also for the datatype)."""
        refusals = []
        for older in (None, *EDGE_DATATYPES):
            try:
                shard = qe.EdgeShard.load(str(self.path), shard_config(dim, frames_on_disk, older))
            except Exception as e:
                if "incompatible" not in str(e).lower():
                    raise
                refusals.append(f"{'as written now' if older is None else f'with {older} frames'}: {e}")
                continue
            self.older_frames = older is not None
            return shard
        raise ValueError("the shard's stored config is incompatible: " + "; ".join(refusals))

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise IndexUnavailableError(f"the Qdrant Edge shard at {self.path} is closed")
        return self._shard

    def upsert(self, items: Sequence[IndexedVideo]) -> None:
        for start in range(0, len(items), UPSERT_BATCH):
            points = [
                qe.Point(
                    it.id,
                    {VIDEO_VECTOR: it.video.tolist()},
                    stored_payload(it, self.frame_datatype),
                )
                for it in items[start : start + UPSERT_BATCH]
            ]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        self.shard.flush()
        self._unoptimized += len(items)
        if self._unoptimized >= self.optimize_every:
            self.optimize()

    def retrieve(self, ids: Sequence[str], with_payload: bool, with_vectors: bool) -> list[StoredPoint]:
        records = self.shard.retrieve(
            list(ids),
            with_payload=self._payload(with_payload, with_vectors),
            with_vector=self._vectors(with_vectors, with_vectors),
        )
        return [stored_point(r) for r in records]

    def _frames_selector(self, include: bool) -> qe.PayloadSelector:
        return (qe.PayloadSelector.Include if include else qe.PayloadSelector.Exclude)([KEY_FRAMES])

    def delete(self, ids: Sequence[str]) -> None:
        self.shard.update(qe.UpdateOperation.delete_points(list(ids)))
        self.shard.flush()

    def count(self, videos_only: bool = False) -> int:
        later = qe.Filter(must_not=[qe.FieldCondition(KEY_WINDOW, range=qe.RangeFloat(gt=0))])
        return self.shard.count(qe.CountRequest(exact=True, filter=later if videos_only else None))

    def nearest(
        self, query: np.ndarray, limit: int, filters: dict[str, FilterValue] | None, frames: bool = True
    ) -> list[StoredPoint]:
        return [stored_point(p) for p in self.shard.query(self.query_request(query, limit, filters, frames))]

    def query_request(
        self, query: np.ndarray, limit: int, filters: dict[str, FilterValue] | None, frames: bool = True
    ) -> qe.QueryRequest:
        """`nearest`'s request (benchmarks time the engine's part of it on its own)."""
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query.tolist(), using=VIDEO_VECTOR),
            filter=_filter(filters),
            with_payload=self._payload(True, frames),
            with_vector=self._vectors(False, frames),
        )

    def scan(
        self, filters: dict[str, FilterValue] | None, page_size: int, frames: bool = True
    ) -> Iterator[list[StoredPoint]]:
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=page_size,
                filter=_filter(filters),
                with_payload=self._payload(True, frames),
                with_vector=self._vectors(False, frames),
            )
            records, offset = self.shard.scroll(request)
            if records:
                yield [stored_point(r) for r in records]
            if offset is None:
                return

    def read_active(self, alias: str) -> ActiveModel | None:
        return read_record_file(self.path.parent, alias)

    def write_active(self, alias: str, active: ActiveModel) -> None:
        write_record_file(self.path.parent, alias, active)

    def optimize(self) -> None:
        self.shard.optimize()
        self._unoptimized = 0

    def info(self) -> dict[str, Any]:
        info = self.shard.info()
        return {"path": str(self.path), "segments": info.segments_count}

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
