"""Pure-compute search speed-up, measured as AdaCLIP measures it: one query-independent vector per
video (MLP-Score) against Clip-Hitchhiker's query scoring over every frame of the same videos.

    python -m benchmarks.speedup_bench --out out/bench/speedup.json           # 10k / 100k / 1M videos
    python -m benchmarks.speedup_bench --out out/s.json --videos 2000 --dim 64  # toy size

Same tensors, same device, nothing but the arithmetic: unit text vectors (Q, D) against
- ``fast``: unit video vectors (V, D): one matmul, then the top 10;
- ``qscore``: unit frame vectors (V, F, D): s = <t, x_f>, w = softmax_f(s / 0.1),
  score = <t, normalize(sum_f w_f x_f)> (SPEC section 4, embedding variant), then the top 10,
  over chunks of videos so that memory stays bounded.
No index, no storage reads: the index-level ratio (`benchmarks.serve_bench`) also pays for
reading frame vectors out of the store. Runs on the CPU (torch's threads) and on CUDA when
present; a size whose tensors would not fit in memory is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaclip.ops import query_scoring_similarity

TOP = 10
CHUNK_ELEMENTS = 1 << 24  # pooled (chunk, Q, D) floats per step of query scoring
MEMORY_SHARE = 0.6  # use at most this share of the free memory for the frame tensor


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speedup_bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--videos", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--frames", type=int, default=16, help="frame vectors per video")
    p.add_argument("--dim", type=int, default=512, help="embedding width (ViT-B/32: 512)")
    p.add_argument("--queries", type=int, nargs="+", default=[1, 64], help="query batch sizes")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per figure (median reported)")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/bench/speedup.json"))
    return p.parse_args(argv)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def fast_top(text: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
    """(Q, D) x (V, D) -> top-10 video indices (Q, 10) by cosine."""
    return (text @ videos.T).topk(TOP, dim=1).indices


def qscore_scores(text: torch.Tensor, frames: torch.Tensor, temperature: float) -> torch.Tensor:
    """Query-scoring cosine (Q, V) of unit texts (Q, D) and unit frames (V, F, D)."""
    q, (v, f, d) = text.shape[0], frames.shape
    chunk = max(1, CHUNK_ELEMENTS // (q * d))
    out = []
    for start in range(0, v, chunk):
        x = frames[start : start + chunk]  # (c, F, D)
        s = (x.reshape(-1, d) @ text.T).view(x.shape[0], f, q)  # (c, F, Q)
        w = torch.softmax(s / temperature, dim=1)  # over frames
        pooled = torch.bmm(w.transpose(1, 2), x)  # (c, Q, D)
        out.append(((pooled * text).sum(-1) / pooled.norm(dim=-1)).T)  # (Q, c)
    return torch.cat(out, dim=1)


def qscore_top(text: torch.Tensor, frames: torch.Tensor, temperature: float) -> torch.Tensor:
    return qscore_scores(text, frames, temperature).topk(TOP, dim=1).indices


def corpus(videos: int, frames: int, dim: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit frame vectors (V, F, D), made in place chunk by chunk, and the video vectors
    normalize(mean_f x_f) (V, D)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.empty(videos, frames, dim, device=device)
    for start in range(0, videos, 8192):
        part = x[start : start + 8192]
        part.normal_(generator=gen)
        part.div_(part.norm(dim=-1, keepdim=True))
    return x, unit(x.mean(dim=1))


def free_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_kernel(text: torch.Tensor, frames: torch.Tensor, temperature: float) -> None:
    """The benchmark's query scoring equals the library's (`adaclip.ops`) on a slice."""
    ours = qscore_scores(text, frames[:256], temperature)
    ref = query_scoring_similarity(text, frames[:256], temperature)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def run_size(args: argparse.Namespace, device: str, videos: int) -> list[dict[str, Any]]:
    x, v = corpus(videos, args.frames, args.dim, device, args.seed)
    rows = []
    for q in args.queries:
        gen = torch.Generator(device=device).manual_seed(args.seed + q)
        text = unit(torch.randn(q, args.dim, device=device, generator=gen))
        check_kernel(text, x, args.temperature)
        fast = timed(lambda t=text: fast_top(t, v), device, args.repeats)
        qscore = timed(lambda t=text: qscore_top(t, x, args.temperature), device, args.repeats)
        rows.append(
            {
                "device": device,
                "videos": videos,
                "queries": q,
                "fast_ms": round(fast * 1e3, 3),
                "qscore_ms": round(qscore * 1e3, 3),
                "speedup": round(qscore / fast, 1),
            }
        )
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['device']:<6}{r['videos']:>10,}{r['queries']:>8}"
        f"{r['fast_ms']:>12.3f}{r['qscore_ms']:>14.1f}{r['speedup']:>10.1f}x"
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    result: dict[str, Any] = {
        "frames": args.frames,
        "dim": args.dim,
        "temperature": args.temperature,
        "machine": machine(),
        "torch": torch.__version__,
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
        "speedup": [],
        "skipped": [],
    }
    print(f"{'device':<6}{'videos':>10}{'queries':>8}{'fast ms':>12}{'qscore ms':>14}{'speedup':>11}")
    for device in devices:
        for videos in args.videos:
            need = videos * args.frames * args.dim * 4
            if need > MEMORY_SHARE * free_bytes(device):
                note = (
                    f"{device} {videos:,} videos: frame vectors need {need / 2**30:.1f} GiB, more than fits"
                )
                result["skipped"].append(note)
                print(f"skipped: {note}", flush=True)
                continue
            result["speedup"].extend(run_size(args, device, videos))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
