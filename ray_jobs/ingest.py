"""`adaclip ingest DIR|ANNOTATIONS`: bulk-index a video library with Ray Data, resumably.

    adaclip ingest data/synth/videos --config configs/tiny.yaml index.path=data/index
    adaclip ingest data/synth/annotations.jsonl --config configs/tiny.yaml model.checkpoint=runs/tiny/best

Pipeline: list the files (only below the allowed roots) -> hash them (driver threads) ->
drop ids already in the index (UUID5 of content hash and model version: a second run skips
everything, before decoding anything) -> decode N frames in Ray Data tasks on CPU workers (corrupt
files, and files that kill their worker, are recorded and skipped) -> encode in an actor pool, on GPUs when the cluster has them
(`EncodeVideos`) -> batched upserts from the driver. The same single-video code as the Serve app
(`adaclip.encoding`) computes every vector, so bulk and uploaded videos are interchangeable.

An embedded Edge index has one owner: the driver opens it and upserts. Do not run this job while
a Serve app owns the same `index.path` (the shard is locked; the job then fails with a clear
error); stop the app, or point both at a Qdrant server (`index.backend=server`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from adaclip.checkpoint import split_checkpoint
from adaclip.config import Config
from adaclip.data.annotations import read_annotations
from adaclip.encoding import EncodedVideo, content_hash, load_encoder_model, resolve_config, to_indexed
from adaclip.errors import ConfigError, DataError, IndexUnavailableError
from adaclip.index import (
    KEY_NUM_WINDOWS,
    KEY_VIDEO_ID,
    IndexedVideo,
    VideoIndex,
    open_index,
    video_id,
)
from adaclip.video.settings import DecodeSettings
from ray_jobs.common import config_from, emit, init_ray
from ray_jobs.frame_store import WORKER_DIED, decode_dataset, tolerating_lost_blocks
from ray_jobs.ingest_stages import EncodeVideos

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".3gp"}
EXISTS_CHUNK = 1000  # ids per index.exists call
HASH_THREADS = 8
ENCODE_CPUS = 0.5  # per encoder actor: leaves the decode tasks a core on a 2-core machine


@dataclass
class Source:
    """One file to ingest: where it is, how it is shown (source, title) and optional metadata."""

    path: Path
    source: str
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def under_roots(path: Path, roots: list[Path]) -> bool:
    """Whether `path` (symlinks resolved) lies below one of `roots`."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def list_sources(target: Path, cfg: Config) -> tuple[list[Source], list[Path]]:
    """The files of a directory (recursively) or of an annotation file's splits, and the default
    roots (the directory, or `data.video_root`)."""
    if target.is_dir():
        root = target.resolve()
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        return [Source(p, str(p.relative_to(root)), p.stem) for p in files], [root]
    if not target.is_file():
        raise DataError(f"{target} is neither a directory of videos nor an annotation file")
    data = cfg.data.model_copy(update={"annotations": target})
    root = Path(data.video_root).resolve()
    sources, errors = [], []
    for split in dict.fromkeys([data.train_split, data.val_split, data.test_split]):
        try:
            records = read_annotations(data, split)
        except DataError as e:  # e.g. a split with no videos; malformed files fail every split
            errors.append(e)
            continue
        for r in records:
            title = r.title or (r.captions[0] if r.captions else r.video_id)
            source = str(r.path.relative_to(root)) if r.path.resolve().is_relative_to(root) else str(r.path)
            sources.append(Source(r.path, source, title, {"video_id": r.video_id, "split": r.split}))
    if not sources and errors:
        raise errors[0]
    return sources, [root]


# ---- driver -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run will do: rows to decode and encode, and what it skips before decoding."""

    todo: list[dict[str, Any]]
    skipped: int  # already in the index
    duplicates: int  # same bytes as another file of this run
    unreadable: dict[str, str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="adaclip ingest", description="bulk-index videos into the search index"
    )
    parser.add_argument("target", help="a directory of videos (recursive) or an annotation file")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. index.path=DIR model.checkpoint=PATH"
    )
    parser.add_argument("--config", help="YAML config (configs/*.yaml); defaults apply when omitted")
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        help="only read files below this directory (repeatable); default: DIR, or data.video_root",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="videos per encoder call")
    parser.add_argument("--upsert-batch", type=int, default=64, help="videos per index upsert")
    parser.add_argument(
        "--decoders",
        type=int,
        default=None,
        help="at most this many decode tasks at once (default: as many as the CPUs allow)",
    )
    parser.add_argument(
        "--encoders", type=int, default=1, help="encoder actors (one GPU each when there are GPUs)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of a random-init model (as the Serve app's seed)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own progress bars and logs")
    return parser.parse_intermixed_args(argv)


def hash_sources(sources: list[Source], threads: int = HASH_THREADS) -> list[str]:
    """sha256 of every file ('' if unreadable), in input order.

    Hashing is I/O bound: threads in the driver read the files at disk speed, where a Ray Data
    stage spent most of its time starting workers (measured here: 0.3 s vs over a minute for
    200 small files on a busy 2-core machine).
    """

    def one(source: Source) -> str:
        try:
            return content_hash(source.path)
        except OSError:
            return ""

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, sources))


def plan(sources: list[Source], hashes: list[str], index: VideoIndex, version: str) -> Plan:
    """Drop unreadable files, ids already indexed (resume) and repeated bytes, before decoding."""
    ids = [video_id(h, version) if h else "" for h in hashes]
    known = [i for i in ids if i]
    existing: set[str] = set()
    for at in range(0, len(known), EXISTS_CHUNK):
        existing |= index.exists(known[at : at + EXISTS_CHUNK])
    result = Plan(todo=[], skipped=0, duplicates=0, unreadable={})
    seen: set[str] = set()
    for source, sha, vid in zip(sources, hashes, ids, strict=True):
        if not sha:
            result.unreadable[str(source.path)] = "cannot read the file"
        elif vid in existing:
            result.skipped += 1
        elif vid in seen:
            result.duplicates += 1
        else:
            seen.add(vid)
            row = {"path": str(source.path), "sha256": sha, "source": source.source, "title": source.title}
            result.todo.append({**row, "metadata": json.dumps(source.metadata)})
    return result


def encoded_dataset(rows: list[dict[str, Any]], cfg: Config, checkpoint: str | None, args):
    """Decode in Ray Data tasks on CPU workers, then encode in an actor pool (GPU when the
    cluster has one); failed files travel on as rows with ``error`` set."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    settings = DecodeSettings.for_index(cfg)
    return decode_dataset(rows, settings, concurrency=args.decoders).map_batches(
        EncodeVideos,
        fn_constructor_kwargs={
            "config": cfg.model_dump(mode="json"),
            "checkpoint": checkpoint,
            "seed": args.seed,
        },
        batch_size=args.batch_size,
        compute=ray.data.ActorPoolStrategy(size=args.encoders),
        num_cpus=ENCODE_CPUS,
        num_gpus=gpus,
    )


def run_pipeline(todo, cfg, checkpoint, args, index: VideoIndex, version: str) -> tuple[int, dict[str, str]]:
    """Stream encoded batches into the index: (videos upserted, failures by path).

    A block whose decode task keeps dying (a hostile file crashing or exhausting its worker) is
    skipped, not fatal: its files are reported as failed and a re-run retries them.
    """
    if not todo:
        return 0, {}
    progress = tqdm(
        total=len(todo), unit="video", desc="ingest", disable=args.json or not sys.stderr.isatty()
    )
    ingested, failures, seen = 0, {}, set()
    pending: dict[str, list[IndexedVideo]] = {}  # a video's windows until all of them are encoded
    try:
        with tolerating_lost_blocks(len(todo)):
            batches = encoded_dataset(todo, cfg, checkpoint, args).iter_batches(
                batch_size=args.upsert_batch, batch_format="numpy"
            )
            for batch in batches:
                before = len(seen)
                for path, error in zip(batch["path"], batch["error"], strict=True):
                    if error:
                        failures[str(path)] = str(error)
                        seen.add(str(path))
                complete = []
                decoded = [str(p) for p, e in zip(batch["path"], batch["error"], strict=True) if not e]
                for path, item in zip(decoded, to_items(batch, version), strict=True):
                    vid = item.payload[KEY_VIDEO_ID]
                    pending.setdefault(vid, []).append(item)
                    if len(pending[vid]) == item.payload[KEY_NUM_WINDOWS]:
                        complete += pending.pop(vid)
                        seen.add(path)
                        ingested += 1
                if complete:
                    index.upsert(complete)  # whole videos only, window 0 written last
                progress.update(len(seen) - before)
    finally:
        progress.close()
    failures.update({row["path"]: WORKER_DIED for row in todo if row["path"] not in seen})
    index.optimize()
    return ingested, failures


def to_items(batch: dict[str, np.ndarray], version: str) -> list:
    """Index points of the decoded rows of an encoded batch."""
    return [
        to_indexed(
            EncodedVideo.from_columns(batch, i),
            str(batch["sha256"][i]),
            version,
            str(batch["source"][i]),
            str(batch["title"][i]),
            json.loads(str(batch["metadata"][i]) or "{}") or None,
        )
        for i in range(len(batch["path"]))
        if not batch["error"][i]
    ]


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Run the job and return its summary (see `table`)."""
    start = time.perf_counter()
    args.overrides, checkpoint = split_checkpoint(args.overrides)
    cfg = resolve_config(config_from(args), checkpoint)
    sources, default_roots = list_sources(Path(args.target), cfg)
    roots = [Path(r).expanduser().resolve() for r in args.root] or default_roots
    allowed = [s for s in sources if under_roots(s.path, roots)]
    rejected = [str(s.path) for s in sources if not under_roots(s.path, roots)]
    model = load_encoder_model(cfg, checkpoint, "cpu", args.seed)  # for its dim and model version
    version, dim = model.model_version, int(model.embed_dim)
    del model
    init_ray(verbose=args.verbose)
    hashes = hash_sources(allowed)
    index = open_index(cfg.index, dim, version)
    try:
        todo = plan(allowed, hashes, index, version)
        pipeline_start = time.perf_counter()
        ingested, failures = run_pipeline(todo.todo, cfg, checkpoint, args, index, version)
        pipeline_s = time.perf_counter() - pipeline_start
        count, collection = index.count(), index.stats()["collection"]
    finally:
        index.close()
    seconds = time.perf_counter() - start
    failures = {**todo.unreadable, **failures}
    return {
        "target": str(args.target),
        "files": len(sources),
        "ingested": ingested,
        "skipped": todo.skipped,
        "duplicates": todo.duplicates,
        "failed": len(failures),
        "rejected": len(rejected),
        "failures": failures,
        "rejected_paths": rejected,
        "count": count,
        "collection": collection,
        "model_version": version,
        "seconds": round(seconds, 3),
        "pipeline_seconds": round(pipeline_s, 3),
        "videos_per_s": round(ingested / seconds, 3) if seconds else 0.0,
    }


def table(r: dict[str, Any]) -> str:
    lines = [
        f"ingest {r['target']} -> {r['collection']} ({r['count']} videos indexed)",
        f"  files {r['files']}  ingested {r['ingested']}  already indexed {r['skipped']}  "
        f"duplicates {r['duplicates']}  failed {r['failed']}  outside roots {r['rejected']}",
        f"  {r['seconds']:.1f} s, {r['videos_per_s']:.2f} videos/s",
    ]
    lines += [f"  failed: {path}: {reason}" for path, reason in list(r["failures"].items())[:10]]
    lines += [f"  outside the allowed roots: {path}" for path in r["rejected_paths"][:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = ingest(args)
    except (ConfigError, DataError, IndexUnavailableError) as e:
        print(f"adaclip ingest: {e}", file=sys.stderr)
        return 2
    emit(result, args.json, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
