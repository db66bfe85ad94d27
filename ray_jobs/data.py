"""Ray Data datasets of training and evaluation rows, from annotations.

With ``data.cache_dir`` set (the default configs), a split is decoded once into the Parquet
frame store (`ray_jobs.frame_store`) and every epoch reads the store: its block order is
shuffled per epoch. A cheap stage in the trainer (`training_batches`) draws the epoch's frames
and captions and tokenises them, so an epoch starts no Ray task (on a small machine a task
can wait seconds for a fresh worker process). Without a store, every epoch decodes the files
again in Ray Data tasks (a stream for corpora too large to store; failed videos then reach the
trainer as ``failed`` rows, which it counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import ray

from adaclip.config import Config
from adaclip.data.annotations import VideoRecord
from adaclip.errors import DataError
from adaclip.video.settings import DecodeSettings
from ray_jobs.frame_store import (
    FrameStore,
    decode_dataset,
    ensure_store,
    eval_rows,
    record_rows,
    training_rows,
)


def check_error_ratio(summary: dict[str, Any], max_ratio: float) -> None:
    """Raise DataError when more than `max_ratio` of the videos seen failed to decode."""
    seen, failed = summary["seen"], summary["failed"]
    if seen and failed / seen > max_ratio:
        examples = "; ".join(f"{p}: {r}" for p, r in list(summary["failures"].items())[:5])
        raise DataError(
            f"{failed} of {seen} videos failed to decode ({failed / seen:.1%} > data.max_error_ratio="
            f"{max_ratio:.1%}); fix or remove them. First failures: {examples}"
        )


def store_summary(store: FrameStore) -> dict[str, Any]:
    return {"seen": store.videos, "failed": len(store.failures), "failures": store.failures}


def decoded_videos(
    records: Sequence[VideoRecord], cfg: Config, train: bool
) -> tuple[ray.data.Dataset, FrameStore | None]:
    """One row per video with its decoded frames: from the store, or decoded by this stream."""
    settings = DecodeSettings.from_config(cfg, train)
    if cfg.data.cache_dir is not None:
        stored = settings.stored(cfg.data.random_pool_factor)
        store = ensure_store(records, stored, cfg.data.cache_dir)
        check_error_ratio(store_summary(store), cfg.data.max_error_ratio)
        ds = store.dataset()
        return (ds.randomize_block_order() if train else ds), store
    # training: a new video order every epoch, before any decoding
    ds = decode_dataset(
        record_rows(records), settings, shuffle=train, concurrency=cfg.train.decode_concurrency
    )
    return ds, None


def train_dataset(records: Sequence[VideoRecord], cfg: Config) -> tuple[ray.data.Dataset, FrameStore | None]:
    """Decoded training videos, in a new block order every epoch; the trainer turns each batch
    into the epoch's training rows (`training_rows`) itself, so an epoch starts no Ray task."""
    return decoded_videos(records, cfg, train=True)


def eval_dataset(records: Sequence[VideoRecord], cfg: Config) -> tuple[ray.data.Dataset, FrameStore | None]:
    """Decoded evaluation videos, one row per video; read them with `eval_batches`."""
    return decoded_videos(records, cfg, train=False)


def training_batches(videos: Iterable[dict[str, np.ndarray]], cfg: Config, keep_failed: bool):
    """The epoch's training rows (frames drawn, captions picked and tokenised) of each video batch."""
    for batch in videos:
        yield training_rows(
            batch,
            num_frames=cfg.model.num_frames,
            caption_mode=cfg.data.caption_mode,
            clip=cfg.model.clip.model_dump_json(),
            context_length=cfg.data.max_text_tokens,
            keep_failed=keep_failed,
        )


def eval_batches(ds: ray.data.Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation rows of the decoded videos that did not fail."""
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield eval_rows(batch)
