"""Exact re-scoring of stored videos for one query: query scoring, best moment, top-k.

Videos keep different numbers of frame vectors, so query scoring runs once per group of equal
frame count: padding would leak into the softmax over frames and change the scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch

from adaclip.ops import query_scoring_similarity

if TYPE_CHECKING:
    from adaclip.index.base import SearchHit

QscoreVariant = Literal["embedding", "scores"]
T = TypeVar("T")


def best_first(score: float, point_id: str) -> tuple[float, str]:
    """Sort key of a ranking: highest score first, ties broken by id so every backend agrees."""
    return -score, point_id


def query_scoring_scores(
    query: np.ndarray,
    frames: Sequence[np.ndarray],
    temperature: float,
    variant: QscoreVariant = "embedding",
) -> list[float]:
    """Clip-Hitchhiker query-scoring score (SPEC section 4, the model's `qscore_variant`) of each video.

    query (D,); frames[i] (K_i, D) raw frame vectors -> one float per video, in input order.
    """
    scores = [0.0] * len(frames)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        groups[len(f)].append(i)
    text = torch.from_numpy(np.asarray(query, dtype=np.float32)[None])  # (1, D)
    for members in groups.values():
        stacked = torch.from_numpy(np.stack([frames[i] for i in members]).astype(np.float32))  # (V, K, D)
        sims = query_scoring_similarity(text, stacked, temperature=temperature, variant=variant)  # (1, V)
        for i, s in zip(members, sims[0].tolist(), strict=True):
            scores[i] = float(s)
    return scores


def best_frame(query: np.ndarray, frames: np.ndarray, timestamps: Any) -> tuple[int, float | None]:
    """Index of the frame with the highest cosine to the query (= the highest query-scoring weight,
    the softmax being monotonic) and its timestamp in seconds (None without timestamps)."""
    f = np.asarray(frames, dtype=np.float64)  # (K, D)
    cos = (f @ np.asarray(query, dtype=np.float64)) / np.maximum(np.linalg.norm(f, axis=1), 1e-12)  # (K,)
    idx = int(np.argmax(cos))
    if isinstance(timestamps, (list, tuple)) and len(timestamps) == len(f):
        return idx, float(timestamps[idx])
    return idx, None


def top_k(hits: list[SearchHit], k: int, group: bool = False) -> list[SearchHit]:
    """The `k` best hits, `best_first`; with `group`, only the best hit of each video."""
    ranked = sorted(hits, key=lambda h: best_first(h.score, h.id))
    return (one_per_key(ranked, lambda h: h.video) if group else ranked)[:k]


def one_per_key(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
    """The first item of each key, in order (the best window of each video in a ranking)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if (k := key(item)) not in seen:
            seen.add(k)
            out.append(item)
    return out
