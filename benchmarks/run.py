"""`adaclip bench`: every performance figure of the project from one command, one table per
section, one JSON with the machine, versions and date; ratios are measured in the same run.

    adaclip bench                          # every section at full size (GPU parts when CUDA is present)
    adaclip bench --quick                  # every section at small sizes, about 10 minutes on 2 CPUs
    adaclip bench --only speedup search    # some sections
    adaclip bench --quick --json           # the JSON on stdout (tables go to stderr)
    adaclip bench --only speedup -- --videos 300 --dim 16   # after `--`: to the section's first script

Sections (each runs the benchmark scripts named; `benchmarks/NOTES.md` says what bounds each figure):
  speedup  pure-compute search: one vector per video vs query scoring over all frames (speedup_bench)
  search   the index in fast / rerank / exact (serve_bench), rerank's agreement with exact on a
           trained model (agreement_bench) and moment accuracy on long videos, windows against one
           point per video (moment_bench); both need `adaclip experiment selection` first
  ingest   decoding alone vs the serving path and the bulk Ray Data job (serve_bench), and
           image-encoder GFLOPs per video with and without selection
  train    the Ray Data training stream, frame store and decoding every epoch, vs pre-loaded
           tensors (data_bench); the model's own step and encoding rates on synthetic frames
           (model_bench: ViT-B/32 on CUDA, the tiny model on CPU)
  http     /search p50/p99, throughput and errors with 1, 8 and 32 concurrent clients against the
           Serve floor, through the proxy and through Serve's direct ingress, and concurrent
           uploads (serve_bench); a live stream's delay from a window complete to searchable
           (stream_bench)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speedup_bench import machine

# section -> [(part, module, full-size arguments, --quick arguments)]
SECTIONS: dict[str, list[tuple[str, str, list[str], list[str]]]] = {
    "speedup": [
        ("speedup", "benchmarks.speedup_bench", [], ["--videos", "10000", "100000", "--repeats", "2"])
    ],
    "search": [
        (
            "index",
            "benchmarks.serve_bench",
            ["--skip", "serve", "--skip", "ingest"],
            ["--skip", "serve", "--skip", "ingest", "--videos", "20000", "--queries", "100"],
        ),
        (
            "rerank_agreement",
            "benchmarks.agreement_bench",
            [],
            ["--videos", "2000", "--queries", "200", "--corpus", "data/bench/agreement-quick"],
        ),
        (
            "moments",
            "benchmarks.moment_bench",
            [],
            ["--videos", "6", "--clips-per-video", "8", "--corpus", "data/bench/moments-quick"],
        ),
    ],
    "ingest": [
        (
            "ingest",
            "benchmarks.serve_bench",
            ["--skip", "index", "--skip", "serve", "--ingest-videos", "200"],
            ["--skip", "index", "--skip", "serve", "--ingest-videos", "48"],
        ),
        ("gflops", "benchmarks.gflops_bench", [], []),
    ],
    "train": [
        (
            "train",
            "benchmarks.data_bench",
            ["--ingest-videos", "0"],
            ["--ingest-videos", "0", "--videos", "24", "--epochs", "2"],
        ),
        ("model", "benchmarks.model_bench", [], ["--steps", "3", "--batch", "8"]),
    ],
    "http": [
        (
            "http",
            "benchmarks.serve_bench",
            ["--skip", "ingest", "--skip", "index", "--direct-ingress"],
            [
                "--skip",
                "ingest",
                "--skip",
                "index",
                "--direct-ingress",
                "--videos",
                "10000",
                "--queries",
                "100",
                "--load-seconds",
                "8",
            ],
        ),
        ("stream", "benchmarks.stream_bench", [], ["--windows", "2", "--pace", "8"]),
    ],
}
VERSIONS = ("torch", "ray", "open_clip_torch", "qdrant-edge-py", "qdrant-client", "decord", "numpy")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="adaclip bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="sections to run (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes: about 10 minutes on 2 CPU cores")
    p.add_argument("--json", action="store_true", help="print the combined JSON on stdout")
    p.add_argument(
        "--out", type=Path, default=Path("out/bench/bench.json"), help="combined JSON (git-ignored)"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if extra and len(args.only or SECTIONS) != 1:
        p.error("arguments after `--` need exactly one section (--only NAME)")
    return args, extra


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_part(module_name: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run one benchmark script's main with `--out`; its JSON, or why it produced none."""
    main_fn = importlib.import_module(module_name).main
    start = time.perf_counter()
    try:
        status = int(main_fn([*args, "--out", str(out)]) or 0)
    finally:  # every script starts its own local Ray (or none): leave none behind for the next
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    if status != 0 or not out.exists():
        return {"skipped": f"{module_name} exited with status {status}", "args": args}
    return {**json.loads(out.read_text()), "seconds": round(time.perf_counter() - start, 1), "args": args}


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    gpu_note = "" if machine()["gpu"] else "no GPU: CPU figures only"
    result: dict[str, Any] = {
        "command": "adaclip bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "note": gpu_note,
    }
    tables = sys.stderr if args.json else sys.stdout
    with tempfile.TemporaryDirectory(prefix="adaclip-bench-") as tmp, contextlib.redirect_stdout(tables):
        for section in args.only or list(SECTIONS):
            print(f"== {section}", flush=True)
            parts = {}
            for i, (part, module, full, quick) in enumerate(SECTIONS[section]):
                section_args = [*(quick if args.quick else full), *(extra if i == 0 else [])]
                parts[part] = run_part(module, section_args, Path(tmp) / f"{section}-{part}.json")
            result[section] = parts
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # partial results survive a failure
    if args.json:
        print(json.dumps(result))
    else:
        print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
