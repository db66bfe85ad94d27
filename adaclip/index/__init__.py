"""Video index: one interface over embedded Qdrant Edge (default) and a Qdrant server.

Usage::

    index = open_index(cfg.index, dim=512, model_version="msrvtt-v1")
    index.upsert([IndexedVideo(video_id(sha256, "msrvtt-v1"), video, frames, payload)])
    hits = index.search(text_embedding, k=10, mode="rerank")
"""

from __future__ import annotations

import os

from adaclip.config import IndexConfig
from adaclip.errors import ConfigError
from adaclip.index.base import (
    KEY_DURATION,
    KEY_MODEL_VERSION,
    KEY_NUM_WINDOWS,
    KEY_SOURCE,
    KEY_TIMESTAMPS,
    KEY_TITLE,
    KEY_VIDEO_ID,
    KEY_WINDOW,
    KEY_WINDOW_END,
    KEY_WINDOW_START,
    IndexBackend,
    IndexedVideo,
    SearchHit,
    VideoIndex,
    collection_name,
    video_id,
    window_id,
)

__all__ = [
    "KEY_DURATION",
    "KEY_MODEL_VERSION",
    "KEY_NUM_WINDOWS",
    "KEY_SOURCE",
    "KEY_TIMESTAMPS",
    "KEY_TITLE",
    "KEY_VIDEO_ID",
    "KEY_WINDOW",
    "KEY_WINDOW_END",
    "KEY_WINDOW_START",
    "IndexBackend",
    "IndexedVideo",
    "SearchHit",
    "VideoIndex",
    "collection_name",
    "open_index",
    "video_id",
    "window_id",
]


def open_index(cfg: IndexConfig, dim: int, model_version: str) -> VideoIndex:
    """Open (creating if needed) the collection of `model_version` on the configured backend.

    edge: a Qdrant Edge shard at `cfg.path / collection`, owned by this process.
    server: `cfg.url` (else env QDRANT_URL) with `cfg.api_key` (else env QDRANT_API_KEY);
    raises IndexUnavailableError when the server cannot be reached within `cfg.timeout_s`.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1 (the embedding width), got {dim!r}")
    name = collection_name(cfg.collection_prefix, model_version)
    if cfg.backend == "edge":
        from adaclip.index.edge import EdgeBackend

        backend: IndexBackend = EdgeBackend(cfg.path, name, dim, frame_datatype=cfg.frame_datatype)
    else:
        from adaclip.index.server import ServerBackend

        url = cfg.url or os.environ.get("QDRANT_URL")
        if not url:
            raise ConfigError("index.backend=server needs index.url or the QDRANT_URL environment variable")
        api_key = cfg.api_key.get_secret_value() if cfg.api_key else os.environ.get("QDRANT_API_KEY") or None
        layout = {
            "shard_number": cfg.shards,
            "replication_factor": cfg.replication_factor,
            "write_consistency_factor": cfg.write_consistency,
        }
        backend = ServerBackend(
            url, api_key, name, dim, timeout_s=cfg.timeout_s, layout=layout, frame_datatype=cfg.frame_datatype
        )
    return VideoIndex(backend, dim=dim, model_version=model_version, rerank_candidates=cfg.rerank_candidates)
