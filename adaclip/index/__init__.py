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
    "open_backend",
    "open_index",
    "server_address",
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
    backend = open_backend(cfg, collection_name(cfg.collection_prefix, model_version), dim)
    return VideoIndex(backend, dim=dim, model_version=model_version, rerank_candidates=cfg.rerank_candidates)


def open_backend(cfg: IndexConfig, collection: str, dim: int) -> IndexBackend:
    """The backend of one named collection (see `open_index`)."""
    if cfg.backend == "edge":
        from adaclip.index.edge import EdgeBackend

        return EdgeBackend(
            cfg.path, collection, dim, frame_datatype=cfg.frame_datatype, frames_on_disk=cfg.frames_on_disk
        )
    from adaclip.index.server import ServerBackend

    url, api_key = server_address(cfg)
    layout = {
        "shard_number": cfg.shards,
        "replication_factor": cfg.replication_factor,
        "write_consistency_factor": cfg.write_consistency,
    }
    return ServerBackend(
        url,
        api_key,
        collection,
        dim,
        timeout_s=cfg.timeout_s,
        layout=layout,
        frame_datatype=cfg.frame_datatype,
        frames_on_disk=cfg.frames_on_disk,
    )


def server_address(cfg: IndexConfig) -> tuple[str, str | None]:
    """(url, API key) of the Qdrant server: `cfg.url` else env QDRANT_URL, `cfg.api_key` else env
    QDRANT_API_KEY."""
    url = cfg.url or os.environ.get("QDRANT_URL")
    if not url:
        raise ConfigError("index.backend=server needs index.url or the QDRANT_URL environment variable")
    return url, cfg.api_key.get_secret_value() if cfg.api_key else os.environ.get("QDRANT_API_KEY") or None
