"""The index interface: records, hits, ids, the backend contract and the `VideoIndex` facade.

One facade over interchangeable storage backends (embedded Qdrant Edge, or a Qdrant server via
qdrant-client), in the style of qdrant-client's `QdrantClient`. The facade owns validation and all
scoring logic (ANN, query-scoring re-rank, exact), so both backends answer identically; a backend
only stores, fetches and runs the cosine ANN search on the `video` vector.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pybase64

from adaclip.index.active import ActiveModel
from adaclip.index.rescoring import (
    QscoreVariant,
    best_first,
    best_frame,
    one_per_key,
    query_scoring_scores,
    top_k,
)

# Schema: one collection per model version, one named vector, these payload fields. DESIGN.md's
# `frames` multivector moved into the payload (KEY_FRAMES): Qdrant hands a multivector to Python as
# nested lists, one float object per value, which at ViT-B/32 sizes doubled a rerank (README).
VIDEO_VECTOR = "video"  # dense, cosine, HNSW
KEY_FRAMES = "frame_vectors"  # the raw frame vectors for exact re-scoring (pack_frames), never returned
FRAMES_VECTOR = "frames"  # where collections written before KEY_FRAMES keep them: a multivector
FRAME_DTYPES = {"float32": "<f4", "float16": "<f2"}
KEY_SOURCE = "source"
KEY_TITLE = "title"
KEY_DURATION = "duration"
KEY_TIMESTAMPS = "frame_timestamps"  # seconds, one per stored frame vector
KEY_MODEL_VERSION = "model_version"
# A long video is stored as windows, one point each (adaclip.video.windows); these say which.
KEY_VIDEO_ID = "video_id"  # the video's id (window 0's point id), on every window
KEY_WINDOW, KEY_NUM_WINDOWS = "window", "num_windows"
KEY_WINDOW_START, KEY_WINDOW_END = "window_start", "window_end"  # seconds
KEY_WRITE_ID = "write_id"  # which `insert` stored a video (decides the one 201 among racing writers)
KEYWORD_FIELDS = (
    KEY_SOURCE,
    KEY_TITLE,
    KEY_MODEL_VERSION,
    KEY_VIDEO_ID,
)  # payload indexes (exact-match filters)

# Fixed namespace so the same (content hash, model version) always gives the same point id.
VIDEO_ID_NAMESPACE = uuid.UUID("5f0b6f5e-8c1a-5d7e-9a57-adac11b0a001")

Mode = Literal["fast", "rerank", "exact"]
MODES = ("fast", "rerank", "exact")
FilterValue = str | int | bool
SCAN_PAGE = 256  # points per page when `exact` scrolls the whole collection
GROUP_FETCH = 4  # grouped `fast` widens its request this many times while repeated videos leave < k


def video_id(content_hash: str, model_version: str) -> str:
    """Point id of a video: UUID5 of (content hash, model version), so re-ingesting is idempotent."""
    if not content_hash or not model_version:
        raise ValueError(
            f"video_id needs a non-empty content hash and model version, got {content_hash!r}, {model_version!r}"
        )
    return str(uuid.uuid5(VIDEO_ID_NAMESPACE, f"{content_hash}:{model_version}"))


def window_id(video: str, window: int) -> str:
    """Point id of window `window` of the video with id `video`: the video id itself for window 0
    (so a one-window video keeps the id it always had), a UUID5 of it for the others."""
    return video if window == 0 else str(uuid.uuid5(uuid.UUID(video), f"window {window}"))


def collection_name(prefix: str, model_version: str) -> str:
    """`{prefix}_{model_version}` with every character outside [A-Za-z0-9_-] replaced by `_`."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{model_version}")
    if not name.strip("_"):
        raise ValueError(
            f"collection name from prefix {prefix!r} and model version {model_version!r} is empty"
        )
    return name


def canonical_id(point_id: str) -> str | None:
    """Canonical UUID string for `point_id`, or None when it is not a UUID (such an id cannot exist)."""
    try:
        return str(uuid.UUID(str(point_id)))
    except (ValueError, TypeError, AttributeError):
        return None


@dataclass
class IndexedVideo:
    """One video as stored: its id, video vector (D,), K frame vectors (K, D) and payload."""

    id: str
    video: np.ndarray  # (D,)
    frames: np.ndarray  # (K, D)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchHit:
    """One search result (a window); `moment` is the timestamp (s) of the frame that best matches
    the query; `video` is the id of the video the window belongs to."""

    id: str
    score: float
    payload: dict[str, Any]
    moment: float | None = None
    frame_index: int | None = None
    video: str = ""

    def __post_init__(self) -> None:
        self.video = self.video or video_of(self.id, self.payload)


def video_of(point_id: str, payload: dict[str, Any] | None) -> str:
    """The video a stored point belongs to (points written before windows existed are videos)."""
    return (payload or {}).get(KEY_VIDEO_ID) or point_id


@dataclass
class StoredPoint:
    """What a backend returns: any field not asked for is None; `score` is the ANN cosine if any."""

    id: str
    payload: dict[str, Any] | None = None
    video: np.ndarray | None = None  # (D,)
    frames: np.ndarray | None = None  # (K, D)
    score: float | None = None


def pack_frames(frames: np.ndarray, datatype: str) -> dict[str, Any]:
    """Frame vectors (K, D) as the KEY_FRAMES payload value: little-endian `datatype` bytes in
    standard base64, which Qdrant returns as one string. pybase64 (SIMD) writes and reads the same
    encoding as the standard library's base64 several times faster: a rerank decodes every
    candidate's."""
    data = np.ascontiguousarray(frames, dtype=FRAME_DTYPES[datatype]).tobytes()
    return {"dtype": datatype, "shape": list(frames.shape), "data": pybase64.b64encode(data).decode("ascii")}


def stored_payload(item: IndexedVideo, frame_datatype: str) -> dict[str, Any]:
    """The payload a backend writes: the item's, with its frame vectors packed in."""
    return {**item.payload, KEY_FRAMES: pack_frames(item.frames, frame_datatype)}


def unpack_frames(packed: dict[str, Any]) -> np.ndarray:
    """`pack_frames`' input back, as float32 (float16 values exactly as stored)."""
    raw = np.frombuffer(
        pybase64.b64decode(packed["data"], validate=True), dtype=FRAME_DTYPES[packed["dtype"]]
    )
    return raw.reshape(packed["shape"]).astype(np.float32)


def stored_point(record: Any) -> StoredPoint:
    """A qdrant-client or Qdrant Edge record / scored point as a StoredPoint (ids as strings); the
    frame vectors come out of the payload (or, in an older collection, the `frames` vector)."""
    vectors = record.vector or {}  # Qdrant Edge converts a field on every access: read each once
    payload = record.payload
    payload = dict(payload) if payload is not None else None
    packed = payload.pop(KEY_FRAMES, None) if payload else None
    video, frames = vectors.get(VIDEO_VECTOR), vectors.get(FRAMES_VECTOR)
    if packed:
        frames = unpack_frames(packed)
    elif frames is not None:
        frames = np.asarray(frames, dtype=np.float32)
    return StoredPoint(
        id=str(record.id),
        payload=payload,
        video=np.asarray(video, dtype=np.float32) if video is not None else None,
        frames=frames,
        score=getattr(record, "score", None),
    )


class IndexBackend(ABC):
    """Storage contract of one collection. Filters are exact matches {payload key: value}."""

    name: str
    collection: str
    older_frames: bool = False  # written before KEY_FRAMES: frame vectors in a `frames` vector
    frame_datatype: str = "float32"  # how new points' frame vectors are written (FRAME_DTYPES)

    def _payload(self, payload: bool, frames: bool) -> Any:
        """What a read takes of the payload: all of it, none, or all but / only the frame vectors."""
        if payload != frames:
            return self._frames_selector(include=frames)
        return payload

    @abstractmethod
    def _frames_selector(self, include: bool) -> Any:
        """The engine's payload selector of only (`include`) or all but the frame vectors."""

    def _vectors(self, video: bool, frames: bool) -> bool | list[str]:
        """The named vectors a read takes (frame vectors are payload, except in an older collection)."""
        names = [VIDEO_VECTOR] if video else []
        if frames and self.older_frames:
            names.append(FRAMES_VECTOR)
        return names or False

    @abstractmethod
    def upsert(self, items: Sequence[IndexedVideo]) -> None:
        """Insert or replace points; durable when it returns."""

    def insert_only(self, item: IndexedVideo) -> None:
        """Store `item` unless its id is stored (then nothing changes); durable when it returns.
        A single-owner store may check and write (its owner serialises writes)."""
        if not self.retrieve([item.id], with_payload=False, with_vectors=False):
            self.upsert([item])

    @abstractmethod
    def retrieve(self, ids: Sequence[str], with_payload: bool, with_vectors: bool) -> list[StoredPoint]:
        """The stored points among `ids` (missing ids are left out)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Delete points; durable when it returns."""

    @abstractmethod
    def count(self, videos_only: bool = False) -> int:
        """Exact number of points; with `videos_only`, of window-0 points (one per video)."""

    @abstractmethod
    def nearest(
        self, query: np.ndarray, limit: int, filters: dict[str, FilterValue] | None, frames: bool = True
    ) -> list[StoredPoint]:
        """Top `limit` by cosine on `video`, best first, with payload (and frames)."""

    @abstractmethod
    def scan(
        self, filters: dict[str, FilterValue] | None, page_size: int, frames: bool = True
    ) -> Iterator[list[StoredPoint]]:
        """Every point matching `filters`, in pages, with payload (and frames)."""

    @abstractmethod
    def read_active(self, alias: str) -> ActiveModel | None:
        """The active record of this store (`adaclip.index.active`), None before one is written."""

    @abstractmethod
    def write_active(self, alias: str, active: ActiveModel) -> None:
        """Make `active` the live collection in one step."""

    def optimize(self) -> None:  # noqa: B027 - optional hook, a no-op where the engine optimises itself
        """Build indexes for recently written points so that searches are fast again."""

    def info(self) -> dict[str, Any]:
        """Backend-specific facts for `stats()`."""
        return {}

    @abstractmethod
    def close(self) -> None:
        """Release the storage (files, locks, connections)."""


class VideoIndex:
    """Video search over one collection (one model version), whatever the backend.

    Modes: `fast` (ANN on the video vector), `rerank` (ANN prefetch of `candidates`, re-scored
    exactly with query scoring over their stored frames; the default) and `exact` (query scoring
    over every video: the accuracy reference).
    """

    def __init__(self, backend: IndexBackend, dim: int, model_version: str, rerank_candidates: int = 200):
        self.backend = backend
        self.dim = dim
        self.model_version = model_version
        self.rerank_candidates = rerank_candidates

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, items: Sequence[IndexedVideo]) -> None:
        """Insert or replace videos (same id = same point); durable when it returns."""
        checked: dict[str, IndexedVideo] = {}
        for item in items:
            video = self._check_item(item)
            checked[video.id] = video  # a repeated id in one batch: the last one wins
        # window 0 (the video id) last: once it is stored, the video's other windows are too
        ordered = sorted(checked.values(), key=lambda v: -int(v.payload.get(KEY_WINDOW, 0)))
        if ordered:
            self.backend.upsert(ordered)

    def insert(self, windows: Sequence[IndexedVideo]) -> tuple[bool, dict[str, Any]]:
        """Store a video (its windows, window 0 first) unless it is stored: (created, the stored
        payload of window 0). Exactly one of several writers racing with the same video gets
        created=True: window 0 is written insert-only with a fresh `write_id`, and the writer whose
        id is stored won (on a Qdrant server this holds across processes)."""
        first, *rest = [self._check_item(w) for w in windows]
        stored = self.get(first.id)
        if stored is not None:
            return False, stored.payload
        if rest:
            self.backend.upsert(rest)  # idempotent: the same bytes give the same windows
        write_id = uuid.uuid4().hex
        self.backend.insert_only(replace(first, payload={**first.payload, KEY_WRITE_ID: write_id}))
        stored = self.get(first.id)
        return stored.payload.get(KEY_WRITE_ID) == write_id, stored.payload

    def delete(self, point_id: str) -> bool:
        """Delete one video, every window of it; False when it was not there."""
        pid = canonical_id(point_id)
        if pid is None:
            return False
        ids = [w.id for w in self.windows(pid)]  # window 0 (the video id) first
        if not ids:
            return False
        self.backend.delete(ids[::-1])  # window 0 (the video id) last, as it was written
        return True

    def optimize(self) -> None:
        """Index recently written points (call after a bulk load); a no-op on a Qdrant server."""
        self.backend.optimize()

    # -- reads --------------------------------------------------------------------------------

    def get(self, point_id: str) -> IndexedVideo | None:
        """The stored video with its vectors (the video vector comes back unit-normalised), or None."""
        pid = canonical_id(point_id)
        found = self.backend.retrieve([pid], with_payload=True, with_vectors=True) if pid else []
        if not found:
            return None
        p = found[0]
        return IndexedVideo(id=p.id, video=p.video, frames=p.frames, payload=p.payload or {})

    def windows(self, video: str) -> list[IndexedVideo]:
        """Every stored window of a video, in order (one item for a one-window video, none when
        it is not stored)."""
        vid = canonical_id(video)
        if vid is None:
            return []
        first = self.backend.retrieve([vid], with_payload=True, with_vectors=True)
        if first and int((first[0].payload or {}).get(KEY_NUM_WINDOWS, 1)) == 1:
            points = first  # a one-window video (or one stored before windows): nothing to scan for
        else:
            found = {p.id: p for p in first}
            found.update(
                {p.id: p for page in self.backend.scan({KEY_VIDEO_ID: vid}, SCAN_PAGE) for p in page}
            )
            points = list(found.values())
        points = sorted(points, key=lambda p: int((p.payload or {}).get(KEY_WINDOW, 0)))
        return [
            IndexedVideo(id=p.id, video=p.video, frames=p.frames, payload=p.payload or {}) for p in points
        ]

    def videos(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, window 0's payload) of every stored video, in storage order."""
        for page in self.backend.scan(None, SCAN_PAGE, frames=False):
            for p in page:
                if int((p.payload or {}).get(KEY_WINDOW, 0)) == 0:
                    yield p.id, p.payload or {}

    def exists(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored (canonical UUID strings), for resumable ingestion."""
        wanted = {c for c in (canonical_id(i) for i in ids) if c is not None}
        if not wanted:
            return set()
        return {p.id for p in self.backend.retrieve(sorted(wanted), with_payload=False, with_vectors=False)}

    def count(self) -> int:
        """Number of stored videos (however many windows each has)."""
        return self.backend.count(videos_only=True)

    def count_points(self) -> int:
        """Number of stored points: one per window."""
        return self.backend.count()

    def stats(self) -> dict[str, Any]:
        """count, backend, collection, dim, model version and backend facts."""
        return {
            "count": self.count(),
            "points": self.count_points(),
            "backend": self.backend.name,
            "collection": self.backend.collection,
            "dim": self.dim,
            "model_version": self.model_version,
            **self.backend.info(),
        }

    def search(
        self,
        query: np.ndarray,
        k: int,
        mode: Mode = "rerank",
        filters: dict[str, FilterValue] | None = None,
        candidates: int | None = None,
        temperature: float = 0.1,
        variant: QscoreVariant = "embedding",
        group: bool = True,
    ) -> list[SearchHit]:
        """Top `k` for a text embedding `query` (D,), best first (see the class docstring): `k`
        videos, each its best window (`group`), or `k` windows. `temperature` and `variant` are
        the model's query scoring (`qscore_temperature`, `qscore_variant`)."""
        q = self._check_query(query)
        self._check_search_args(k, mode, filters, candidates, temperature)
        k = int(k)
        if mode == "fast":
            return self._fast(q, k, filters, group)
        if mode == "rerank":
            limit = max(k, int(candidates) if candidates is not None else self.rerank_candidates)
            return self._rescore(q, self.backend.nearest(q, limit, filters), k, temperature, variant, group)
        best: list[SearchHit] = []
        for page in self.backend.scan(filters, SCAN_PAGE):
            best = top_k(best + self._rescore(q, page, k, temperature, variant, group), k, group)
        return best

    def close(self) -> None:
        """Release the backend (files, locks, connections)."""
        self.backend.close()

    def __enter__(self) -> VideoIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------

    def _fast(
        self, q: np.ndarray, k: int, filters: dict[str, FilterValue] | None, group: bool
    ) -> list[SearchHit]:
        """ANN top `k`, read with their frame vectors (to find their moments) in one request;
        grouped, while windows of one video leave fewer than `k` videos, it reads GROUP_FETCH
        times more points (without frame vectors) and then the final hits' frame vectors."""
        limit, frames = k, {}
        while True:
            points = self.backend.nearest(q, limit, filters, frames=limit == k)
            frames.update((p.id, p.frames) for p in points if p.frames is not None)
            hits = [SearchHit(id=p.id, score=float(p.score), payload=p.payload or {}) for p in points]
            hits = top_k(hits, k, group)
            if not group or len(hits) >= k or len(points) < limit:
                break
            limit *= GROUP_FETCH
        missing = [h.id for h in hits if h.id not in frames]
        if missing:
            frames.update((p.id, p.frames) for p in self.backend.retrieve(missing, False, True))
        for h in hits:
            if h.id in frames:  # a point deleted since the search keeps no moment
                h.frame_index, h.moment = best_frame(q, frames[h.id], h.payload.get(KEY_TIMESTAMPS))
        return hits

    def _rescore(
        self,
        q: np.ndarray,
        points: list[StoredPoint],
        k: int,
        temperature: float,
        variant: QscoreVariant,
        group: bool = False,
    ) -> list[SearchHit]:
        """Exact query-scoring scores of `points`, `best_first` (one per video when `group`); the
        moment is found for the best `k` only."""
        scores = query_scoring_scores(q, [p.frames for p in points], temperature, variant)
        ranked = sorted(zip(scores, points, strict=True), key=lambda sp: best_first(sp[0], sp[1].id))
        if group:
            ranked = one_per_key(ranked, lambda sp: video_of(sp[1].id, sp[1].payload))
        ranked = ranked[:k]
        hits = []
        for score, p in ranked:
            payload = p.payload or {}
            idx, moment = best_frame(q, p.frames, payload.get(KEY_TIMESTAMPS))
            hits.append(SearchHit(id=p.id, score=score, payload=payload, moment=moment, frame_index=idx))
        return hits

    def _check_vector(self, name: str, x: Any, ndim: int) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float32)
        expected = "(D,)" if ndim == 1 else "(K, D) with K >= 1"
        if arr.ndim != ndim or arr.shape[-1] != self.dim or arr.size == 0:
            raise ValueError(f"{name} must have shape {expected} with D={self.dim}, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if (np.linalg.norm(arr, axis=-1) == 0).any():
            raise ValueError(f"{name} contains a zero vector, whose cosine similarity is undefined")
        return arr

    def _check_query(self, query: Any) -> np.ndarray:
        return self._check_vector("query", query, 1)

    def _check_item(self, item: IndexedVideo) -> IndexedVideo:
        pid = canonical_id(item.id)
        if pid is None:
            raise ValueError(f"video id must be a UUID (see adaclip.index.video_id), got {item.id!r}")
        video = self._check_vector(f"video vector of {pid}", item.video, 1)
        frames = self._check_vector(f"frame vectors of {pid}", item.frames, 2)
        if self.backend.frame_datatype == "float16" and np.abs(frames).max() > np.finfo(np.float16).max:
            raise ValueError(
                f"frame vectors of {pid} exceed float16's range: set index.frame_datatype=float32"
            )
        payload = dict(item.payload or {})
        if KEY_FRAMES in payload:
            raise ValueError(f"payload key {KEY_FRAMES!r} of {pid} is reserved for the frame vectors")
        version = payload.setdefault(KEY_MODEL_VERSION, self.model_version)
        if version != self.model_version:
            raise ValueError(
                f"payload model_version {version!r} of {pid} does not match this index's {self.model_version!r}"
            )
        timestamps = payload.get(KEY_TIMESTAMPS)
        if timestamps is not None:
            if not isinstance(timestamps, (list, tuple, np.ndarray)) or len(timestamps) != len(frames):
                raise ValueError(
                    f"{KEY_TIMESTAMPS} of {pid} must be a list with one time per frame vector "
                    f"({len(frames)}), got {timestamps!r}"
                )
            payload[KEY_TIMESTAMPS] = [float(t) for t in timestamps]
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"payload of {pid} must be JSON-serialisable (plain str/int/float/list/dict): {e}"
            ) from e
        return IndexedVideo(id=pid, video=video, frames=frames, payload=payload)

    @staticmethod
    def _check_search_args(
        k: int,
        mode: str,
        filters: dict[str, FilterValue] | None,
        candidates: int | None,
        temperature: float,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if candidates is not None and (
            isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1
        ):
            raise ValueError(f"candidates must be an int >= 1 or None, got {candidates!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        for key, value in (filters or {}).items():
            if not isinstance(key, str) or not isinstance(value, (str, int, bool)):
                raise ValueError(
                    f"filters map a payload key to a str/int/bool to match exactly, got {key!r}: {value!r}"
                )
