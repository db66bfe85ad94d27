"""The model's own compute, no data path: videos per second one device trains and encodes.

    python -m benchmarks.model_bench --out out/bench/model.json      # ViT-B/32 on CUDA, tiny on CPU
    python -m benchmarks.model_bench --config configs/tiny.yaml --batch 8 --steps 3   # toy size

Synthetic uint8 frames at the config's sizes stand in for decoded videos, already on the device,
so each figure is the ceiling the data path (`benchmarks.data_bench`) has to feed. Weights are
random (`model.clip.pretrained` and the selector's backbone weights are dropped): compute does not
depend on their values. Rows:
- train: `adaclip.training.train_step` as `ray_jobs/train.py` takes it (forward, backward, gradient
  clipping, AdamW, the logit-scale clamp; no scheduler), bf16 autocast where the config says
  `precision: amp` and the device is CUDA;
- encode: the index's video vectors as served (`encode_video` in eval mode: the selector on all N
  frames, CLIP on the K kept), against CLIP on all N frames (what selection saves), in fp32 as
  `adaclip.encoding.encode_decoded` runs them and under bf16 autocast;
- text: one query and a batch through the serving text path (`QueryEncoder`, traced).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaclip.config import Config, load_config
from adaclip.encoding import QueryEncoder
from adaclip.models import AdaCLIP
from adaclip.training import RetrievalTask, adamw, train_step
from benchmarks.speedup_bench import machine, timed

CUDA_CONFIG, CPU_CONFIG = "configs/msrvtt.yaml", "configs/tiny.yaml"
RANDOM_WEIGHTS = ["model.clip.pretrained=null", "model.selector.backbone_weights=null"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help=f"default: {CUDA_CONFIG} on CUDA, {CPU_CONFIG} on CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="videos per step (default: 64 on CUDA, 8 on CPU)")
    p.add_argument("--steps", type=int, default=10, help="timed calls per figure (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/bench/model.json"))
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.config = args.config or (CUDA_CONFIG if cuda else CPU_CONFIG)
    args.batch = args.batch or (64 if cuda else 8)
    return args


def synthetic_batch(cfg: Config, batch: int, device: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random uint8 frames at the sizes the config decodes: CLIP's and the selector's views."""
    n, size, view = cfg.model.num_frames, cfg.data.clip_size, cfg.model.selector.input_size
    channels = 1 if cfg.model.selector.grayscale else 3

    def frames(s: int, c: int) -> torch.Tensor:
        return torch.randint(0, 256, (batch, n, s, s, c), dtype=torch.uint8, generator=gen).to(device)

    return {"clip_frames": frames(size, 3), "selector_frames": frames(view, channels)}


def bf16(device: str, on: bool) -> torch.autocast:
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=on)


def train_row(model: AdaCLIP, cfg: Config, rows: dict[str, torch.Tensor], args) -> dict[str, Any]:
    """`train_step` as `ray_jobs/train.py` takes it (without its scheduler), at the config's K."""
    amp = cfg.train.precision == "amp" and args.device.startswith("cuda")
    task = RetrievalTask(model, cfg.train.distill_weight).train()
    optimizer = adamw(model, cfg.train)
    step_args = (cfg.model.top_k, cfg.train.min_tau, cfg.train.grad_clip, amp)
    seconds = timed(lambda: train_step(task, model, optimizer, rows, *step_args), args.device, args.steps)
    model.zero_grad(set_to_none=True)
    return row("train step", "bf16 autocast" if amp else "fp32", len(rows["tokens"]), seconds, "videos/s")


def row(part: str, precision: str, batch: int, seconds: float, unit: str) -> dict[str, Any]:
    return {
        "part": part,
        "precision": precision,
        "batch": batch,
        "ms": round(seconds * 1000, 2),
        "per_s": round(batch / seconds, 1),
        "unit": unit,
    }


def encode_rows(model: AdaCLIP, batch: dict[str, torch.Tensor], args) -> list[dict[str, Any]]:
    model.eval()
    b = len(batch["clip_frames"])
    rows = []
    precisions = [("fp32", False), *([("bf16 autocast", True)] if args.device.startswith("cuda") else [])]
    for name, on in precisions:
        with torch.no_grad(), bf16(args.device, on):
            served = timed(
                lambda: model.encode_video(batch["clip_frames"], batch["selector_frames"]),
                args.device,
                args.steps,
            )
            every = timed(lambda: model.encode_frames(batch["clip_frames"]), args.device, args.steps)
        rows.append(row(f"encode K={model.cfg.top_k} of N (served)", name, b, served, "windows/s"))
        rows.append(row(f"encode all N={model.cfg.num_frames} frames", name, b, every, "windows/s"))
    return rows


def text_rows(model: AdaCLIP, cfg: Config, args) -> list[dict[str, Any]]:
    encoder = QueryEncoder(model, cfg.data.max_text_tokens)
    rows = []
    for size in (1, args.batch):
        texts = [f"a person doing thing number {i} in a video" for i in range(size)]
        rows.append(
            row(
                "text query",
                "fp32",
                size,
                timed(lambda t=texts: encoder(t), args.device, args.steps),
                "queries/s",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, [*RANDOM_WEIGHTS, *args.overrides])
    model = AdaCLIP.from_config(cfg.model, args.device)
    gen = torch.Generator().manual_seed(args.seed)
    batch = synthetic_batch(cfg, args.batch, args.device, gen)
    captions = [f"caption {i} of a video" for i in range(args.batch)]
    tokens = model.tokenize(captions, cfg.data.max_text_tokens).to(args.device)
    rows = [train_row(model, cfg, {**batch, "tokens": tokens}, args), *encode_rows(model, batch, args)]
    rows += text_rows(model, cfg, args)
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "model": {
            "clip": cfg.model.clip.name,
            "selector": cfg.model.selector.backbone,
            "num_frames": cfg.model.num_frames,
            "top_k": cfg.model.top_k,
            "clip_size": cfg.data.clip_size,
        },
        "device": args.device,
        "machine": machine(),
        "torch": torch.__version__,
        "peak_gpu_gib": None if peak is None else round(peak, 1),
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    print(f"{args.config} on {args.device} ({result['machine']['gpu'] or result['machine']['cpu']})")
    print(f"{'part':<28}{'precision':<15}{'batch':>6}{'ms':>10}{'per s':>10}")
    for r in rows:
        print(
            f"{r['part']:<28}{r['precision']:<15}{r['batch']:>6}{r['ms']:>10.2f}{r['per_s']:>10.1f} {r['unit']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
