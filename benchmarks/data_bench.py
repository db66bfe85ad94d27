"""Data-pipeline benchmark: training samples/s of one model fed three ways. Figures, not tests.

    python -m benchmarks.data_bench --out out/data_bench.json              # tiny model, ~3-4 min on 2 CPUs
    python -m benchmarks.data_bench --out out/b.json --videos 64 --video-size 224 --batch-size 16

Every mode trains the same model (configs/tiny.yaml unless --config; fresh weights from the same
seed) with the training step of `ray_jobs.train` (RetrievalStep, symmetric loss, AdamW), the same
batch size and the same number of steps, in this process:

- ``stream``: the Ray Data stream of `ray_jobs.data.clips_dataset` (shuffle, decode on CPU
  actors, `iter_torch_batches`), decoding every video again every epoch (no cache);
- ``stream_cached``: the same stream reading the decoded-frame cache, warmed by one untimed pass;
- ``preloaded``: no Ray Data: every row decoded once up front (untimed, reported apart), then a
  plain loop over shuffled in-memory tensors.

The difference between ``stream`` and ``preloaded`` is what decoding and streaming cost the
trainer; ``stream_cached`` shows how much of it the cache wins back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaclip.config import Config, load_config
from adaclip.data.annotations import read_annotations
from adaclip.data.synth import make_corpus
from adaclip.models import AdaCLIP, VideoEmbedding
from adaclip.ops import symmetric_contrastive_loss
from ray_jobs.data import DecodeClips, clips_dataset

ROOT = Path(__file__).resolve().parents[1]
MODES = ("stream", "stream_cached", "preloaded")
Batch = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=16")
    p.add_argument("--videos", type=int, default=32, help="synthetic corpus size (70%% are training videos)")
    p.add_argument("--video-size", type=int, default=128, help="synthetic video side in pixels")
    p.add_argument("--video-frames", type=int, default=96, help="frames per synthetic video")
    p.add_argument("--batch-size", type=int, default=8, help="training batch (same in every mode)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per mode")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument(
        "--corpus", type=Path, help="existing corpus dir with annotations.jsonl (default: synthesise)"
    )
    p.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    p.add_argument("--out", type=Path, required=True, help="JSON results path")
    return p.parse_intermixed_args(argv)


def bench_config(args: argparse.Namespace, corpus: Path, cache: Path | None) -> Config:
    data = [f"data.annotations={corpus / 'annotations.jsonl'}", f"data.video_root={corpus}"]
    data += ["data.caption_mode=all", f"data.cache_dir={cache}" if cache else "data.cache_dir=null"]
    return load_config(args.config, [*data, f"train.batch_size={args.batch_size}", *args.overrides])


class Trainer:
    """One model and optimiser; `step` is the training step of ray_jobs.train on one process."""

    def __init__(self, cfg: Config, device: torch.device, seed: int = 0):
        from ray_jobs.train import RetrievalStep

        torch.manual_seed(seed)
        self.cfg, self.device = cfg, device
        self.model = AdaCLIP.from_config(cfg.model, device=device)
        self.step_module = RetrievalStep(self.model).train()
        groups = self.model.param_groups(cfg.train.lr, cfg.train.coef_lr, cfg.train.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, betas=cfg.train.betas)
        self.k, self.tau = cfg.model.top_k, cfg.train.init_tau

    def step(self, rows: Batch) -> float:
        rows = {key: value.to(self.device, non_blocking=True) for key, value in rows.items()}
        text, video, scale = self.step_module(
            rows["tokens"], rows["clip_frames"], rows["selector_frames"], self.k, self.tau
        )
        if video.dim() == 3:  # query scoring: (B, K, D) kept frames
            embedding = VideoEmbedding(video=None, frames=video, indices=None, logits=None)
        else:
            embedding = VideoEmbedding(video=video, frames=None, indices=None, logits=None)
        loss = symmetric_contrastive_loss((scale.float() * self.model.similarity(text, embedding)).float())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.model.clamp_logit_scale()
        return float(loss.detach())


def run_epochs(trainer: Trainer, epochs: Iterable[Iterable[Batch]]) -> dict[str, Any]:
    """Train on each epoch's batches; wall time covers waiting for data as well as the steps."""
    per_epoch, first_batch, samples, steps, loss = [], [], 0, 0, float("nan")
    start = time.perf_counter()
    for batches in epochs:
        epoch_start = time.perf_counter()
        for i, rows in enumerate(batches):
            if i == 0:  # how long the trainer waited before its first step of the epoch
                first_batch.append(round(time.perf_counter() - epoch_start, 2))
            loss = trainer.step(rows)
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
        "final_loss": round(loss, 4),
    }


def stream_epochs(cfg: Config, records, epochs: int) -> Iterator[Iterator[Batch]]:
    """Each epoch re-executes the stream: shuffle, decode (or read the cache), batch."""
    ds = clips_dataset(records, cfg, train=True)
    columns = ["tokens", "clip_frames", "selector_frames"]
    for _ in range(epochs):
        yield (
            {key: batch[key] for key in columns}
            for batch in ds.select_columns(columns).iter_torch_batches(
                batch_size=cfg.train.batch_size, drop_last=True
            )
        )


def preload(cfg: Config, records) -> tuple[Batch, float]:
    """Decode every training row once, in this process, into in-memory tensors."""
    start = time.perf_counter()
    decode = DecodeClips(cfg.model_dump(mode="json"), train=True, seed=cfg.train.seed)
    parts = []
    for i in range(0, len(records), 4):  # the stream's decode batch size
        chunk = records[i : i + 4]
        parts.append(
            decode(
                {
                    "video_index": np.arange(i, i + len(chunk)),
                    "path": np.array([str(r.path) for r in chunk], dtype=object),
                    "captions": np.array([json.dumps(r.captions) for r in chunk], dtype=object),
                }
            )
        )
    columns = ("tokens", "clip_frames", "selector_frames")
    rows = {key: torch.from_numpy(np.concatenate([p[key] for p in parts])) for key in columns}
    return rows, time.perf_counter() - start


def preloaded_epochs(rows: Batch, batch_size: int, epochs: int, seed: int) -> Iterator[Iterator[Batch]]:
    generator = torch.Generator().manual_seed(seed)
    n = len(rows["tokens"])
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield (
            {key: value[order[i : i + batch_size]] for key, value in rows.items()}
            for i in range(0, n - batch_size + 1, batch_size)
        )


def run_mode(mode: str, args: argparse.Namespace, corpus: Path, work: Path, device) -> dict[str, Any]:
    cache = work / "cache" if mode == "stream_cached" else None
    cfg = bench_config(args, corpus, cache)
    records = read_annotations(cfg.data, cfg.data.train_split)
    extra: dict[str, Any] = {}
    if mode == "preloaded":
        rows, seconds = preload(cfg, records)
        extra = {"preload_decode_s": round(seconds, 2), "preload_mib": round(sum_bytes(rows) / 2**20, 1)}
        epochs = preloaded_epochs(rows, cfg.train.batch_size, args.epochs, cfg.train.seed)
    else:
        if mode == "stream_cached":  # one untimed pass fills the cache, as a first epoch would
            start = time.perf_counter()
            for _ in clips_dataset(records, cfg, train=True).iter_batches(batch_size=64):
                pass
            extra = {"cache_fill_s": round(time.perf_counter() - start, 2)}
        epochs = stream_epochs(cfg, records, args.epochs)
    result = run_epochs(Trainer(cfg, device, seed=cfg.train.seed), epochs)
    return {**result, **extra, "videos": len(records), "batch_size": cfg.train.batch_size}


def sum_bytes(rows: Batch) -> int:
    return sum(t.numel() * t.element_size() for t in rows.values())


def table(result: dict[str, Any]) -> str:
    head = f"{'mode':<15}{'samples/s':>10}{'steps':>7}{'samples':>9}{'seconds':>9}  epoch s (first batch s)"
    lines = [
        f"data bench: {result['videos']} training videos, batch {result['batch_size']}, "
        f"{result['epochs']} epochs, {result['device']} ({result['cpus']} CPUs)",
        head,
        "-" * len(head),
    ]
    for mode in MODES:
        r = result["modes"].get(mode)
        if r:
            pairs = zip(r["epoch_seconds"], r["first_batch_seconds"], strict=True)
            lines.append(
                f"{mode:<15}{r['samples_per_s']:>10.2f}{r['steps']:>7}{r['samples']:>9}{r['seconds']:>9.1f}"
                f"  {' '.join(f'{e:.1f} ({b:.1f})' for e, b in pairs)}"
            )
    pre = result["modes"].get("preloaded")
    if pre:
        lines.append(f"(preloaded: decoding every row up front took {pre['preload_decode_s']} s, untimed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    work = Path(args.workdir or tempfile.mkdtemp(prefix="data-bench-"))
    corpus = args.corpus or make_corpus(
        work / "corpus", videos=args.videos, seed=1, frames_per_video=args.video_frames, size=args.video_size
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    result: dict[str, Any] = {
        "command": " ".join(
            ["python -m benchmarks.data_bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        "device": str(device),
        "cpus": int(ray.cluster_resources().get("CPU", 0)),
        "epochs": args.epochs,
        "torch_threads": torch.get_num_threads(),
        "modes": {},
    }
    for mode in args.modes:
        result["modes"][mode] = run_mode(mode, args, corpus, work, device)
        print(f"{mode}: {result['modes'][mode]}", file=sys.stderr, flush=True)
    first = next(iter(result["modes"].values()))
    result.update(videos=first["videos"], batch_size=first["batch_size"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
