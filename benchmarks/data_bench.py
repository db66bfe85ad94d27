"""Data-path benchmark: the training input stream and bulk ingestion against their hardware
baselines, measured in one run. Figures, not tests.

    python -m benchmarks.data_bench --out out/bench/data.json       # tiny model, ~5 min on 2 CPUs
    python -m benchmarks.data_bench --out out/b.json --videos 64 --ingest-videos 400

Training (every mode trains the same model, configs/tiny.yaml with fresh weights from the same
seed, with `adaclip.training.RetrievalTask`, the same batch and the same epochs, in this process):

- ``store``: the frame store (`ray_jobs.frame_store`), built once (untimed, reported apart), read
  as the Train workers read it: `ray_jobs.data.train_dataset`, the epoch's rows drawn in the loop;
- ``stream``: no store, every epoch decodes every video again in Ray Data tasks;
- ``preloaded``: no Ray Data: every row decoded up front, then a loop over in-memory tensors;
- ``decode_only``: decoding the same videos alone, one process per CPU (no Ray, no training):
  the rate a decode-every-epoch stream cannot beat on these cores.

Ingestion: `adaclip ingest` (the Ray Data job: decode tasks, encoder actor pool, batched upserts
into an embedded index) against ``decode_only`` on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaclip.config import Config, load_config
from adaclip.data.annotations import read_annotations
from adaclip.data.synth import make_corpus
from adaclip.models import AdaCLIP
from adaclip.training import RetrievalTask, adamw, train_step
from adaclip.video.settings import DecodeSettings

ROOT = Path(__file__).resolve().parents[1]
MODES = ("store", "stream", "preloaded")
Batch = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=16")
    p.add_argument("--videos", type=int, default=48, help="training corpus size (70%% are training videos)")
    p.add_argument("--video-size", type=int, default=128, help="synthetic video side in pixels")
    p.add_argument("--video-frames", type=int, default=96, help="frames per synthetic video")
    p.add_argument("--batch-size", type=int, default=8, help="training batch (same in every mode)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per mode")
    p.add_argument(
        "--ingest-videos", type=int, default=300, help="videos for the ingestion figures (0: skip)"
    )
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    p.add_argument("--out", type=Path, required=True, help="JSON results path")
    return p.parse_intermixed_args(argv)


def bench_config(args: argparse.Namespace, corpus: Path, cache: Path | None, *extra: str) -> Config:
    data = [f"data.annotations={corpus / 'annotations.jsonl'}", f"data.video_root={corpus}"]
    data += ["data.caption_mode=all", f"data.cache_dir={cache}" if cache else "data.cache_dir=null"]
    return load_config(args.config, [*data, f"train.batch_size={args.batch_size}", *args.overrides, *extra])


class Trainer:
    """One model and optimiser stepping `RetrievalTask` on one process."""

    def __init__(self, cfg: Config, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.model = AdaCLIP.from_config(cfg.model)
        self.task = RetrievalTask(self.model, cfg.train.distill_weight).train()
        self.optimizer = adamw(self.model, cfg.train)
        self.k, self.tau = cfg.model.top_k, cfg.train.init_tau

    def step(self, rows: Batch) -> float:
        args = (self.k, self.tau, self.cfg.train.grad_clip)
        return float(train_step(self.task, self.model, self.optimizer, rows, *args))


def run_epochs(trainer: Trainer, epochs: Iterable[Iterable[Batch]]) -> dict[str, Any]:
    """Train on each epoch's batches; wall time covers waiting for data as well as the steps."""
    per_epoch, first_batch, samples, steps = [], [], 0, 0
    start = time.perf_counter()
    for batches in epochs:
        epoch_start = time.perf_counter()
        for i, rows in enumerate(batches):
            if i == 0:  # how long the trainer waited before its first step of the epoch
                first_batch.append(round(time.perf_counter() - epoch_start, 3))
            trainer.step(rows)
            samples += len(rows["tokens"])
            steps += 1
        per_epoch.append(round(time.perf_counter() - epoch_start, 2))
    seconds = time.perf_counter() - start
    return {
        "samples": samples,
        "steps": steps,
        "seconds": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 2),
        "epoch_seconds": per_epoch,
        "first_batch_seconds": first_batch,
    }


def ray_epochs(ds, store, cfg: Config, epochs: int) -> Iterator[Iterator[Batch]]:
    """What a Train worker does each epoch (`ray_jobs.train.train_epoch`), on one process."""
    from ray_jobs.data import training_batches
    from ray_jobs.train import PREFETCH_BATCHES, SHUFFLE_BUFFER_BATCHES, exact_batches, to_torch

    size = cfg.train.batch_size
    for _ in range(epochs):
        videos = ds.iter_batches(
            batch_size=size,
            batch_format="numpy",
            prefetch_batches=PREFETCH_BATCHES,
            local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * size,
        )
        rows = (to_torch(b, torch.device("cpu")) for b in training_batches(videos, cfg, store is None))
        yield exact_batches(rows, size, [])


def preload(cfg: Config, records) -> tuple[Batch, float]:
    """Decode every training row once, in this process, into in-memory tensors."""
    from ray_jobs.data import training_batches
    from ray_jobs.frame_store import decode_rows, record_rows

    start = time.perf_counter()
    settings = DecodeSettings.from_config(cfg, train=True).model_dump()
    rows = record_rows(records)
    batch = {key: np.array([r[key] for r in rows], dtype=object) for key in rows[0]}
    batch["video_index"] = batch["video_index"].astype(np.int64)
    (out,) = training_batches([{**batch, **decode_rows(batch, settings)}], cfg, keep_failed=False)
    columns = ("tokens", "clip_frames", "selector_frames")
    return {key: torch.from_numpy(out[key]) for key in columns}, time.perf_counter() - start


def preloaded_epochs(rows: Batch, batch_size: int, epochs: int, seed: int) -> Iterator[Iterator[Batch]]:
    generator = torch.Generator().manual_seed(seed)
    n = len(rows["tokens"])
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield (
            {key: value[order[i : i + batch_size]] for key, value in rows.items()}
            for i in range(0, n - batch_size + 1, batch_size)
        )


def _decode_one(job: tuple[dict[str, Any], str]) -> bool:
    settings, path = job
    DecodeSettings.model_validate(settings).decode(path)
    return True


def decode_only(settings: DecodeSettings, paths: list[str], processes: int) -> dict[str, Any]:
    """Videos/s of decoding alone, one process per CPU (pool start-up untimed)."""
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_decode_one, [(settings.model_dump(), paths[0])] * processes))  # warm
        start = time.perf_counter()
        list(pool.map(_decode_one, [(settings.model_dump(), p) for p in paths], chunksize=4))
        seconds = time.perf_counter() - start
    return {
        "videos": len(paths),
        "seconds": round(seconds, 2),
        "videos_per_s": round(len(paths) / seconds, 2),
    }


def training_figures(args, corpus: Path, work: Path, cpus: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = bench_config(args, corpus, work / "cache")
    records = read_annotations(cfg.data, cfg.data.train_split)
    rows_per_video = sum(len(r.captions) for r in records) / len(records)
    decode = decode_only(
        DecodeSettings.from_config(cfg, train=True), [str(r.path) for r in records] * 3, cpus
    )
    decode["samples_per_s"] = round(decode["videos_per_s"] * rows_per_video, 2)
    out["decode_only"] = decode
    for mode in MODES:
        mode_cfg = bench_config(args, corpus, work / "cache" if mode == "store" else None)
        extra: dict[str, Any] = {}
        if mode == "preloaded":
            rows, seconds = preload(mode_cfg, records)
            extra = {"preload_decode_s": round(seconds, 2)}
            epochs = preloaded_epochs(rows, args.batch_size, args.epochs, mode_cfg.train.seed)
        else:
            if mode == "store":
                from ray_jobs.frame_store import ensure_store

                start = time.perf_counter()
                settings = DecodeSettings.from_config(mode_cfg, train=True).stored(
                    mode_cfg.data.random_pool_factor
                )
                store = ensure_store(records, settings, mode_cfg.data.cache_dir)
                extra = {
                    "store_build_s": round(time.perf_counter() - start, 2),
                    "store_mib": round(store.bytes() / 2**20, 1),
                }
            from ray_jobs.data import train_dataset

            start = time.perf_counter()  # once per run: read (and materialise) the store
            ds, store = train_dataset(records, mode_cfg)
            extra["dataset_setup_s"] = round(time.perf_counter() - start, 2)
            epochs = ray_epochs(ds, store, mode_cfg, args.epochs)
        out[mode] = {**run_epochs(Trainer(mode_cfg, seed=mode_cfg.train.seed), epochs), **extra}
        print(f"{mode}: {out[mode]}", file=sys.stderr, flush=True)
    out["videos"], out["rows_per_video"] = len(records), round(rows_per_video, 2)
    return out


def ingest_figures(args, work: Path, cpus: int) -> dict[str, Any]:
    """`adaclip ingest` of a fresh library against decoding the same files alone."""
    from ray_jobs.ingest import main as ingest_main

    library = make_corpus(
        work / "library",
        videos=args.ingest_videos,
        seed=2,
        frames_per_video=args.video_frames,
        size=args.video_size,
    )
    cfg = load_config(args.config)
    paths = sorted(str(p) for p in (library / "videos").glob("*.mp4"))
    decode = decode_only(DecodeSettings.from_config(cfg, train=False), paths, cpus)
    result_path = work / "ingest.json"
    argv = [str(library / "videos"), "--config", args.config, f"index.path={work / 'index'}", "--json"]
    with open(result_path, "w") as f:
        stdout, sys.stdout = sys.stdout, f
        try:
            ingest_main(argv)
        finally:
            sys.stdout = stdout
    run = json.loads(result_path.read_text())
    pipeline = {"videos": run["ingested"], "seconds": run["pipeline_seconds"]}
    pipeline["videos_per_s"] = round(run["ingested"] / run["pipeline_seconds"], 2)
    return {"decode_only": decode, "ingest": pipeline, "ingest_total_seconds": run["seconds"]}


def ratios(result: dict[str, Any]) -> dict[str, float]:
    train, out = result["train"], {}
    out["store_vs_preloaded"] = train["store"]["samples_per_s"] / train["preloaded"]["samples_per_s"]
    out["stream_vs_decode_only"] = train["stream"]["samples_per_s"] / train["decode_only"]["samples_per_s"]
    out["store_first_batch_after_epoch_1_s"] = max(train["store"]["first_batch_seconds"][1:] or [0])
    if "ingest" in result:
        ing = result["ingest"]
        out["ingest_vs_decode_only"] = ing["ingest"]["videos_per_s"] / ing["decode_only"]["videos_per_s"]
    return {key: round(value, 3) for key, value in out.items()}


def table(result: dict[str, Any]) -> str:
    t, r = result["train"], result["ratios"]
    lines = [
        f"data bench: {t['videos']} training videos ({t['rows_per_video']} rows each), batch {result['batch_size']}, "
        f"{result['epochs']} epochs, {result['cpus']} CPUs, load average {result['load_average']}",
        f"{'figure':<46}{'value':>12}  {'baseline':>12}  ratio",
    ]
    lines.append(
        f"{'train: store, samples/s (vs preloaded)':<46}{t['store']['samples_per_s']:>12.1f}  "
        f"{t['preloaded']['samples_per_s']:>12.1f}  {r['store_vs_preloaded']:.0%}"
    )
    lines.append(
        f"{'train: decode every epoch, samples/s (vs decode)':<46}{t['stream']['samples_per_s']:>12.1f}  "
        f"{t['decode_only']['samples_per_s']:>12.1f}  {r['stream_vs_decode_only']:.0%}"
    )
    lines.append(
        f"{'train: store, first batch after epoch 1, s':<46}{r['store_first_batch_after_epoch_1_s']:>12.3f}"
    )
    lines.append(f"{'train: store build (decode once), s':<46}{t['store']['store_build_s']:>12.1f}")
    if "ingest" in result:
        i = result["ingest"]
        lines.append(
            f"{'ingest: videos/s (vs decode alone)':<46}{i['ingest']['videos_per_s']:>12.1f}  "
            f"{i['decode_only']['videos_per_s']:>12.1f}  {r['ingest_vs_decode_only']:.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from ray_jobs.common import init_ray

    work = Path(args.workdir or tempfile.mkdtemp(prefix="data-bench-"))
    corpus = make_corpus(
        work / "corpus", videos=args.videos, seed=1, frames_per_video=args.video_frames, size=args.video_size
    )
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    init_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    result: dict[str, Any] = {
        "command": " ".join(
            ["python -m benchmarks.data_bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        "cpus": cpus,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    result["train"] = training_figures(args, corpus, work, cpus)
    if args.ingest_videos:
        result["ingest"] = ingest_figures(args, work, cpus)
    result["ratios"] = ratios(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
