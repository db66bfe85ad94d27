"""Decode once, stream many: the decoded-frame store, written and read by Ray Data.

The first run over a split decodes every video with Ray Data tasks (`decode_rows`) and writes
the rows to Parquet (`Dataset.write_parquet`): the selector views, the CLIP-size frames, the
frame timestamps and the captions, one row per video. Every epoch and every later run reads the
store (`read_parquet`) instead of decoding again; where it fits in the object store it is
materialised once per run, so an epoch starts in milliseconds.

A store lives in ``<data.cache_dir>/frames/<settings key>-<corpus key>``: the settings key covers
everything that changes the pixels (`DecodeSettings`), the corpus key every file's path, size and
modification time and the captions, so a changed setting or file gives a new store and an
unchanged one is reused. ``manifest.json`` is written last, after an atomic rename of the whole
folder: a folder with a manifest is complete. On a cluster ``data.cache_dir`` must be storage
every node sees.

A file that cannot be decoded keeps its row with ``error`` set (and zero frames) and is counted;
a file whose decode worker dies (a crash, or out of memory) loses its block: the missing videos
are decoded again one per task, and those that kill their worker again are recorded as failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray

from adaclip.config import ClipConfig
from adaclip.data.annotations import VideoRecord, captions_for_training
from adaclip.errors import VideoDecodeError
from adaclip.models.clip import load_tokenizer
from adaclip.video.settings import DecodeSettings, draw_frames

# Videos per decode task. Measured here (2 cores, 300 videos): batches of 4 at 0.5 CPU took 27 s,
# batches of 16 at 1 CPU 9 s, against 4.5 s for decoding alone: task and worker start-up dominate
# small tasks. A block lost to a crash is decoded again one video per task.
DECODE_BATCH = 16
DECODE_CPUS = 1.0  # per decode task (more tasks than cores only adds start-up and contention)
MANIFEST = "manifest.json"
WORKER_DIED = "its decode task failed twice (the worker crashed or ran out of memory)"
# Materialise a store read for training when it takes at most this share of the object store.
MATERIALIZE_SHARE = 0.3
# Videos per block of a materialised store: at most BLOCK_ROWS, and at least MIN_BLOCKS blocks,
# so a small store still has a block order worth shuffling every epoch (each block adds a little
# per-epoch overhead, so not smaller than that).
BLOCK_ROWS = 8
MIN_BLOCKS = 4


def record_rows(records: Sequence[VideoRecord]) -> list[dict[str, Any]]:
    """The small per-video input rows of a decode pass."""
    return [
        {"video_index": i, "path": str(r.path), "captions": json.dumps(r.captions)}
        for i, r in enumerate(records)
    ]


def decode_rows(batch: dict[str, np.ndarray], settings: dict[str, Any], seed: int | None = None):
    """Ray Data map function: decode each row's file; one output row per input row, or per window
    when the settings cut videos into windows (bulk ingestion of long videos).

    Output columns: the input's (``video_index``, ``path``, ``captions``, ...), the `DecodeSettings.columns`
    of the video and ``error`` ('' when decoded). A failed file keeps one row with zero frames,
    so failures travel with the data instead of through a side channel.
    """
    decode = DecodeSettings.model_validate(settings)
    rng = np.random.default_rng(seed)
    per_file, errors = [], []
    for path in batch["path"]:
        try:
            windows = (
                decode.decode_all(str(path)) if decode.window_seconds else [decode.decode(str(path), rng=rng)]
            )
            errors.append("")
        except VideoDecodeError as e:
            windows = []
            errors.append(e.reason or "cannot decode")
        per_file.append(windows)
    counts = [max(1, len(w)) for w in per_file]
    good = [w for windows in per_file for w in windows]
    columns = decode.columns(good)
    # the input columns pass through (video_index, path, captions, ...), once per output row
    if any(c != 1 for c in counts):
        out = {key: np.repeat(np.asarray(values), counts, axis=0) for key, values in batch.items()}
    else:
        out = dict(batch)
    out["error"] = np.repeat(np.array(errors, dtype=object), counts)
    if len(good) == len(out["error"]):
        return {**out, **columns}
    # scatter the decoded rows back among zero rows for the failed files
    ok = np.array([e == "" for e in out["error"]])
    for key, values in columns.items():
        full = np.zeros((len(ok), *values.shape[1:]), dtype=values.dtype)
        full[ok] = values
        out[key] = full
    return out


@lru_cache(maxsize=4)
def _tokenizer(clip: str, context_length: int):
    return load_tokenizer(ClipConfig.model_validate_json(clip), context_length)


def training_rows(
    batch: dict[str, np.ndarray],
    num_frames: int,
    caption_mode: str,
    clip: str,
    context_length: int,
    keep_failed: bool = False,
) -> dict[str, np.ndarray]:
    """Decoded video rows -> training rows for this epoch (cheap: the trainer runs it).

    Draws N of the stored frames where the store holds a pool (random sampling), picks the
    epoch's caption(s) (`data.caption_mode`; 'all' gives one row per caption) and tokenises them.
    Failed rows are dropped, or kept with ``failed=1`` (`keep_failed`, for a stream without a
    store: the trainer counts them).
    """
    rng = np.random.default_rng()
    failed = np.array([bool(e) for e in batch["error"]])
    rows, texts = [], []
    for i in range(len(failed)):
        if failed[i]:
            if keep_failed:
                rows.append(i)
                texts.append("")
            continue
        for text in captions_for_training(json.loads(batch["captions"][i]), caption_mode, rng):
            rows.append(i)
            texts.append(text)
    rows = np.asarray(rows, dtype=np.int64)
    stored = batch["clip_frames"].shape[1]
    picks = np.stack([draw_frames(stored, num_frames, rng) for _ in rows]) if len(rows) else None
    out = {}
    for key in ("clip_frames", "selector_frames", "timestamps"):
        values = batch[key][rows]
        if picks is not None and stored != num_frames:
            values = np.take_along_axis(values, picks.reshape(picks.shape + (1,) * (values.ndim - 2)), 1)
        elif picks is None:
            values = values[:, :num_frames]
        out[key] = values
    out["video_index"] = np.asarray(batch["video_index"], dtype=np.int64)[rows]
    tokenize = _tokenizer(clip, context_length)
    out["tokens"] = tokenize(texts).numpy() if texts else np.zeros((0, context_length), dtype=np.int64)
    out["failed"] = failed[rows].astype(np.uint8)
    return out


def eval_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decoded video rows -> evaluation rows (failed videos dropped)."""
    ok = np.array([not e for e in batch["error"]], dtype=bool)
    return {
        key: np.asarray(batch[key])[ok]
        for key in ("video_index", "clip_frames", "selector_frames", "timestamps")
    }


def corpus_key(records: Sequence[VideoRecord]) -> str:
    """Changes when any file (path, size, modification time) or caption of the split changes."""
    digest = hashlib.sha1()
    for r in records:
        try:
            st = Path(r.path).stat()
            ident = [str(Path(r.path).resolve()), st.st_size, st.st_mtime_ns]
        except OSError:
            ident = [str(r.path), -1, -1]
        digest.update(json.dumps([ident, r.captions]).encode())
    return digest.hexdigest()[:16]


@dataclass
class FrameStore:
    """A complete store: where its Parquet shards are and which videos failed."""

    path: Path
    settings: DecodeSettings
    videos: int
    failures: dict[str, str]  # path -> reason
    built: bool  # decoded by this call (False: reused)

    @property
    def decoded(self) -> int:
        return self.videos - len(self.failures)

    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*.parquet"))

    def dataset(self, materialize: bool | None = None) -> ray.data.Dataset:
        """The stored rows; materialised when `materialize`, or by default when they fit easily."""
        if materialize is None:
            capacity = ray.cluster_resources().get("object_store_memory", 0)
            materialize = self.bytes() * 2 <= MATERIALIZE_SHARE * capacity  # decompressed: about 2x
        if not materialize:  # streamed from disk: a new file order every epoch
            return ray.data.read_parquet(str(self.path), shuffle="files")
        rows_per_block = max(1, min(BLOCK_ROWS, self.videos // MIN_BLOCKS))
        ds = ray.data.read_parquet(str(self.path))
        return ds.repartition(target_num_rows_per_block=rows_per_block).materialize()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def decode_dataset(
    rows: list[dict[str, Any]],
    settings: DecodeSettings,
    batch: int = DECODE_BATCH,
    shuffle: bool = False,
    concurrency: int | None = None,
    decode_fn: Callable = decode_rows,
) -> ray.data.Dataset:
    """`rows` decoded by Ray Data tasks (`decode_rows`), `batch` videos per task, in a new block
    order per execution when `shuffle`; for the store, the training stream and bulk ingestion.

    Ray Data retries a task whose worker died forever by default, so a file that crashes its
    decoder would hang the job: retries are bounded to one. `max_retries` is still the only way to
    say so (through `ray_remote_args`, whose deprecation warning is silenced here).
    """
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch)))
    if shuffle:
        ds = ds.randomize_block_order()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            decode_fn,
            fn_kwargs={"settings": settings.model_dump()},
            batch_size=batch,
            num_cpus=DECODE_CPUS,
            max_retries=1,
            compute=ray.data.TaskPoolStrategy(size=concurrency) if concurrency else None,
        )


@contextmanager
def tolerating_lost_blocks(blocks: int):
    """Let up to `blocks` blocks fail (their tasks kept dying) without failing the execution:
    the caller finds their videos missing from the output and records them as failed."""
    ctx = ray.data.DataContext.get_current()
    previous, ctx.max_errored_blocks = ctx.max_errored_blocks, blocks
    try:
        yield
    finally:
        ctx.max_errored_blocks = previous


def decode_pass(
    rows: list[dict[str, Any]], settings: DecodeSettings, out: Path, batch: int, decode_fn: Callable
) -> None:
    """Decode `rows` and write them as Parquet under `out`; a block whose task keeps dying is
    skipped (its videos are missing from `out`)."""
    with tolerating_lost_blocks(math.ceil(len(rows) / batch)):
        decode_dataset(rows, settings, batch, decode_fn=decode_fn).write_parquet(str(out))


def _written_index(folder: Path) -> dict[int, str]:
    """video_index -> error of every row written under `folder`."""
    if not any(folder.rglob("*.parquet")):
        return {}
    table = pq.read_table(str(folder), columns=["video_index", "error"])
    return dict(zip(table["video_index"].to_pylist(), table["error"].to_pylist(), strict=True))


def ensure_store(
    records: Sequence[VideoRecord],
    settings: DecodeSettings,
    cache_dir: Path,
    decode_fn: Callable = decode_rows,
) -> FrameStore:
    """The store of `records` at `settings`: reused when complete, otherwise decoded and written."""
    folder = Path(cache_dir) / "frames" / f"{settings.key()}-{corpus_key(records)}"
    manifest = _read_manifest(folder)
    built = manifest is None
    if built:
        rows = record_rows(records)
        tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            decode_pass(rows, settings, tmp / "part-0", DECODE_BATCH, decode_fn)
            written = _written_index(tmp)
            missing = [r for r in rows if r["video_index"] not in written]
            if missing:  # blocks lost to dying workers: once more, one video per task
                decode_pass(missing, settings, tmp / "part-1", 1, decode_fn)
                written = _written_index(tmp)
            outcome = {r["path"]: written.get(r["video_index"], WORKER_DIED) for r in rows}
            failures = {path: reason for path, reason in outcome.items() if reason}
            manifest = {"settings": settings.model_dump(), "videos": len(rows), "failures": failures}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            try:
                tmp.rename(folder)
            except OSError:  # another run completed the same store first: keep theirs
                if _read_manifest(folder) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest = _read_manifest(folder) or manifest
    return FrameStore(folder, settings, manifest["videos"], manifest["failures"], built)
