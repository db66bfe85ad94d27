"""Run the benchmarks (`adaclip bench` / `make bench`): each prints its table and writes JSON.

    adaclip bench                      # every benchmark, JSON under out/bench/
    adaclip bench data --out-dir out   # one benchmark
    adaclip bench data -- --videos 64  # arguments after `--` go to the (single) chosen benchmark

A benchmark is a module with `main(argv) -> int` that takes `--out PATH`; add it to BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

BENCHMARKS: dict[str, tuple[str, str]] = {
    "speedup": (
        "benchmarks.speedup_bench",
        "pure compute: one vector per video against query scoring over all frames (10k-1M videos)",
    ),
    "data": (
        "benchmarks.data_bench",
        "training input (frame store, decode every epoch, pre-loaded, decode alone) and bulk ingestion",
    ),
    "serve": ("benchmarks.serve_bench", "search latency per mode, rerank agreement, ingestion throughput"),
    "agreement": (
        "benchmarks.agreement_bench",
        "rerank vs exact on a trained model: agreement, R@1 and latency per candidate count",
    ),
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    lines = "\n".join(f"  {name:<6} {help_}" for name, (_, help_) in BENCHMARKS.items())
    p = argparse.ArgumentParser(
        prog="adaclip bench",
        description=f"benchmarks:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument(
        "--out-dir", type=Path, default=Path("out/bench"), help="where <name>.json goes (git-ignored)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    if extra and len(args.names) != 1:
        p.error("arguments after `--` need exactly one benchmark name")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    status = 0
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name][0])
        print(f"== {name} ({BENCHMARKS[name][0]})", flush=True)
        status |= int(module.main(["--out", str(args.out_dir / f"{name}.json"), *extra]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
