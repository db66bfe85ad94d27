"""Ray Data pipeline from annotations to training and evaluation rows.

Rows stream from a list of (video, captions) through `DecodeClips` (a callable class run by
`map_batches` on CPU workers) into Ray Train workers; nothing is materialised as a whole. Decoded
frames go through an on-disk `FrameCache`, so later epochs and later runs skip decoding. A video
that fails to decode is dropped from the stream and counted in an `ErrorTally` actor; the job
fails with a clear message only when the share of bad videos passes `data.max_error_ratio`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from adaclip.config import Config
from adaclip.data.annotations import VideoRecord, captions_for_training
from adaclip.errors import DataError, VideoDecodeError
from adaclip.models.clip import load_tokenizer
from adaclip.video.cache import FrameCache
from adaclip.video.decode import DecodedVideo, decode_video

TALLY_NAME = "adaclip-decode-errors"


def decode_settings(cfg: Config, sampling: str) -> dict[str, Any]:
    """Everything that changes the decoded pixels: the cache key."""
    return {
        "num_frames": cfg.model.num_frames,
        "sampling": sampling,
        "clip_size": cfg.data.clip_size,
        "selector_size": cfg.model.selector.input_size,
        "grayscale": cfg.model.selector.grayscale,
    }


@ray.remote(num_cpus=0)
class ErrorTally:
    """Counts decoded and failed videos across all decode workers of a job."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.failures: dict[str, str] = {}

    def record(self, paths: list[str], failures: dict[str, str]) -> None:
        self.seen.update(paths)
        self.failures.update(failures)

    def summary(self) -> dict[str, Any]:
        return {"seen": len(self.seen), "failed": len(self.failures), "failures": dict(self.failures)}


def check_error_ratio(summary: dict[str, Any], max_ratio: float) -> None:
    """Raise DataError when more than `max_ratio` of the videos seen failed to decode."""
    seen, failed = summary["seen"], summary["failed"]
    if seen and failed / seen > max_ratio:
        examples = "; ".join(f"{p}: {r}" for p, r in list(summary["failures"].items())[:5])
        raise DataError(
            f"{failed} of {seen} videos failed to decode ({failed / seen:.1%} > data.max_error_ratio="
            f"{max_ratio:.1%}); fix or remove them. First failures: {examples}"
        )


class DecodeClips:
    """Decode a batch of videos into uint8 frame arrays (both views) plus caption token ids.

    Input batch columns: ``video_index`` (int), ``path`` (str), ``captions`` (JSON list of str).
    Output: one row per training caption (`per_caption=True`: caption mode random, concat or all)
    or one row per video (evaluation), with ``clip_frames`` (N,S,S,3), ``selector_frames``
    (N,s,s,C), ``timestamps`` (N,), ``video_index`` and, per caption, ``tokens`` (L,).
    Runs without Ray too: call it on a dict of numpy arrays.
    """

    def __init__(
        self, config: dict[str, Any], train: bool, tally_name: str | None = None, seed: int | None = None
    ):
        self.cfg = Config.model_validate(config)
        self.train = train
        self.sampling = self.cfg.data.train_sampling if train else self.cfg.data.eval_sampling
        self.settings = decode_settings(self.cfg, self.sampling)
        use_cache = self.cfg.data.cache_dir is not None and self.sampling != "random"
        self.cache = FrameCache(self.cfg.data.cache_dir, self.settings) if use_cache else None
        self.tokenizer = load_tokenizer(self.cfg.model.clip, self.cfg.data.max_text_tokens) if train else None
        self.rng = np.random.default_rng(seed)
        self.tally_name = tally_name
        self.failures: dict[str, str] = {}

    def decode(self, path: str) -> DecodedVideo:
        cached = self.cache.get(path) if self.cache is not None else None
        if cached is not None:
            return cached
        video = decode_video(
            path,
            num_frames=self.settings["num_frames"],
            sampling=self.sampling,
            clip_size=self.settings["clip_size"],
            selector_size=self.settings["selector_size"],
            selector_grayscale=self.settings["grayscale"],
            rng=self.rng,
        )
        if self.cache is not None:  # not `if self.cache`: an empty FrameCache has len 0
            self.cache.put(path, video)
        return video

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        failures: dict[str, str] = {}
        for index, path, captions in zip(batch["video_index"], batch["path"], batch["captions"], strict=True):
            try:
                video = self.decode(str(path))
            except VideoDecodeError as e:
                failures[str(path)] = e.reason
                continue
            row = {
                "video_index": int(index),
                "clip_frames": video.clip_frames,
                "selector_frames": video.selector_frames,
                "timestamps": video.timestamps.astype(np.float32),
            }
            if not self.train:
                rows.append(row)
                continue
            for text in captions_for_training(json.loads(captions), self.cfg.data.caption_mode, self.rng):
                rows.append({**row, "tokens": self.tokenizer([text])[0].numpy()})
        self.failures.update(failures)
        if self.tally_name:
            ray.get_actor(self.tally_name).record.remote([str(p) for p in batch["path"]], failures)
        return stack_rows(rows, with_tokens=self.train, cfg=self.cfg)


def stack_rows(rows: list[dict[str, Any]], with_tokens: bool, cfg: Config) -> dict[str, np.ndarray]:
    """Stack row dicts into batch columns; an all-failed batch yields correctly shaped empty columns."""
    if rows:
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}
    n, s, t = cfg.model.num_frames, cfg.data.clip_size, cfg.model.selector.input_size
    empty = {
        "video_index": np.zeros((0,), np.int64),
        "clip_frames": np.zeros((0, n, s, s, 3), np.uint8),
        "selector_frames": np.zeros((0, n, t, t, 1 if cfg.model.selector.grayscale else 3), np.uint8),
        "timestamps": np.zeros((0, n), np.float32),
    }
    if with_tokens:
        empty["tokens"] = np.zeros((0, cfg.data.max_text_tokens), np.int64)
    return empty


def records_dataset(records: Sequence[VideoRecord]) -> ray.data.Dataset:
    """The (small) list of videos as a Ray dataset; frames are decoded downstream, lazily."""
    items = [
        {"video_index": i, "path": str(r.path), "captions": json.dumps(r.captions)}
        for i, r in enumerate(records)
    ]
    return ray.data.from_items(items)


def clips_dataset(
    records: Sequence[VideoRecord], cfg: Config, train: bool, tally_name: str | None = None
) -> ray.data.Dataset:
    """Stream of decoded rows for `records` (train: one row per caption; eval: one per video).

    Training shuffles the small list of paths (a new order every epoch), before any decoding.
    """
    ds = records_dataset(records)
    if train:
        ds = ds.random_shuffle(num_cpus=0.25)  # a fraction: decode and Train workers hold the rest
    return ds.map_batches(
        DecodeClips,
        fn_constructor_kwargs={
            "config": cfg.model_dump(mode="json"),
            "train": train,
            "tally_name": tally_name,
        },
        batch_size=4,
        concurrency=cfg.train.decode_concurrency,
        num_cpus=0.5,
    )
