"""Two-stage search on a trained model: how often `rerank` (ANN on the video vector, then query
scoring over the candidates) returns exactly `exact`'s top 10 (query scoring over every video),
for each candidate count, at what latency, and R@1 of `fast`, `rerank` and `exact`.

    adaclip experiment selection                      # trains runs/experiment-selection/learned
    python -m benchmarks.agreement_bench --out out/bench/agreement.json   # 10,000 videos

1. A synthetic corpus (`adaclip synth`, real mp4 files, cached) is decoded and encoded by the
   checkpoint (decode + encode in one process per CPU); the vectors are cached per model version.
2. They go into a fresh embedded index (`VideoIndex`, Qdrant Edge), as uploads would put them.
3. Queries are held-out captions: a paraphrase of a random video's caption (the model never saw
   these videos; it was trained on another corpus). A hit for R@1 is any video whose scene has
   those attributes (the corpus has 480 attribute combinations, so several videos share one).
4. `exact` is computed by brute force over the same arrays (checked against the index's own
   `exact` on `--timed-exact` queries, which also time it); `fast` and `rerank` run on the index.
   `read ms` is Qdrant Edge's own query for the candidates' payloads and frame vectors, before any
   conversion or scoring: a floor under any rerank of that many candidates over this index.
Prints a table, writes JSON and a plot of agreement and latency against the candidate count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaclip.config import Config, DataConfig, load_config
from adaclip.data.annotations import read_annotations
from adaclip.data.synth import ensure_corpus
from adaclip.encoding import (
    decode_for_model,
    encode_decoded,
    encode_queries,
    load_encoder_model,
    resolve_config,
)
from adaclip.index import IndexedVideo, open_index, video_id
from adaclip.ops import query_scoring_similarity
from benchmarks.serve_bench import percentiles

ROOT = Path(__file__).resolve().parents[1]
TOP = 10
CHUNK = 32  # videos per decode + encode task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.agreement_bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--checkpoint", default="runs/experiment-selection/learned/best")
    p.add_argument(
        "--random-model", action="store_true", help="a randomly initialised --config model (tests only)"
    )
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--videos", type=int, default=10_000)
    p.add_argument("--corpus", type=Path, default=Path("data/bench/agreement"), help="cached corpus")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--candidates", type=int, nargs="+", default=[10, 50, 100, 200, 500])
    p.add_argument("--timed-exact", type=int, default=20, help="queries timed through the index's exact")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--frame-datatype", choices=["float32", "float16"], default="float32", help="index.frame_datatype"
    )
    p.add_argument("--frames-on-disk", action="store_true", help="index.frames_on_disk")
    p.add_argument("--out", type=Path, default=Path("out/bench/agreement.json"))
    p.add_argument("--plot", type=Path, default=None, help="PNG of the curve (default: next to --out)")
    return p.parse_args(argv)


# ---- encoding (cached) ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(cfg_json: str, checkpoint: str | None, seed: int) -> None:
    torch.set_num_threads(1)
    cfg = Config.model_validate_json(cfg_json)
    _WORKER.update(cfg=cfg, model=load_encoder_model(cfg, checkpoint, "cpu", seed))


def _encode_chunk(paths: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cfg, model = _WORKER["cfg"], _WORKER["model"]
    encoded = encode_decoded(model, [decode_for_model(p, cfg) for p in paths])
    return [(e.video, e.frames, e.frame_timestamps) for e in encoded]


def encode_corpus(cfg: Config, checkpoint: str | None, paths: list[str], version: str, args) -> dict:
    """Video vectors (V, D), frame vectors (V, K, D) and kept-frame times (V, K), cached per version."""
    cache = args.corpus / f"encoded-{version}-{len(paths)}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    start = time.perf_counter()
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    init = (cfg.model_dump_json(), checkpoint, 0)
    with ProcessPoolExecutor(args.workers, initializer=_init_worker, initargs=init) as pool:
        rows = [row for part in pool.map(_encode_chunk, chunks) for row in part]
    out = {
        "video": np.stack([r[0] for r in rows]),
        "frames": np.stack([r[1] for r in rows]),
        "times": np.stack([r[2] for r in rows]),
        "encode_s": np.float64(time.perf_counter() - start),
    }
    np.savez(cache, **out)
    return out


# ---- measuring ---------------------------------------------------------------------------------


def timed_search(index, query: np.ndarray, **kw) -> tuple[list[int], float]:
    start = time.perf_counter()
    hits = index.search(query, TOP, **kw)
    return [h.payload["row"] for h in hits], (time.perf_counter() - start) * 1000


def measure(index, queries: np.ndarray, exact: list[list[int]], relevant: list[set[int]], args, qs) -> dict:
    """Latency and R@1 of fast, each rerank candidate count's agreement with exact, exact's own."""
    kw = {"temperature": qs["temperature"], "variant": qs["variant"]}

    def r1(tops: list[list[int]]) -> float:
        return round(100 * float(np.mean([t[0] in rel for t, rel in zip(tops, relevant, strict=True)])), 2)

    def engine_read(limit: int) -> dict[str, float]:
        """Qdrant Edge's own query for `limit` candidates with payloads and frame vectors, nothing
        converted to numpy or scored: the least any rerank over this index can cost."""
        times = []
        for q in queries:
            request = index.backend.query_request(q, limit, None)
            start = time.perf_counter()
            index.backend.shard.query(request)
            times.append((time.perf_counter() - start) * 1000)
        return percentiles(times)

    fast = [timed_search(index, q, mode="fast") for q in queries]
    out: dict[str, Any] = {"fast": {**percentiles([t for _, t in fast]), "R1": r1([h for h, _ in fast])}}
    out["rerank"] = []
    for c in args.candidates:
        runs = [timed_search(index, q, mode="rerank", candidates=c, **kw) for q in queries]
        tops = [h for h, _ in runs]
        lat = percentiles([t for _, t in runs])
        out["rerank"].append(
            {
                "candidates": c,
                "top10_identical_share": round(
                    float(np.mean([t == e for t, e in zip(tops, exact, strict=True)])), 4
                ),
                "top10_same_set_share": round(
                    float(np.mean([set(t) == set(e) for t, e in zip(tops, exact, strict=True)])), 4
                ),
                "mean_top10_overlap": round(
                    float(np.mean([len(set(t) & set(e)) / TOP for t, e in zip(tops, exact, strict=True)])), 4
                ),
                "R1": r1(tops),
                **lat,
                "p50_vs_fast": round(lat["p50_ms"] / out["fast"]["p50_ms"], 2),
                "engine_read_p50_ms": engine_read(c)["p50_ms"],
            }
        )
    timed = [timed_search(index, q, mode="exact", **kw) for q in queries[: args.timed_exact]]
    for (hits, _), want in zip(timed, exact, strict=False):
        assert hits == want, "the index's exact mode disagrees with the brute force"
    out["exact"] = {**percentiles([t for _, t in timed]), "R1": r1(exact)}
    return out


def recommend(result: dict[str, Any], share: float = 0.99, max_ratio: float = 2.0) -> int | None:
    """The smallest candidate count whose top 10 equals exact's on `share` of the queries within
    `max_ratio` x fast's p50 latency (None: no count measured meets both)."""
    ok = [
        r["candidates"]
        for r in result["rerank"]
        if r["top10_identical_share"] >= share and r["p50_vs_fast"] <= max_ratio
    ]
    return min(ok) if ok else None


def candidates_needed(queries: np.ndarray, videos: np.ndarray, exact: list[list[int]]) -> np.ndarray:
    """Per query, the candidates a rerank needs to hold exact's top 10: the worst rank, under the
    video vector (brute-force cosine, no ANN error), of any video in exact's top 10."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    v = videos / np.linalg.norm(videos, axis=1, keepdims=True)
    sims = q @ v.T  # (queries, videos)
    return np.array([int((sims[i] > sims[i, top].min()).sum()) + 1 for i, top in enumerate(exact)])


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rerank"]
    c = [r["candidates"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(c, [100 * r["top10_identical_share"] for r in rows], "o-", label="top 10 identical to exact (%)")
    ax.plot(c, [100 * r["mean_top10_overlap"] for r in rows], "s--", label="mean top-10 overlap (%)")
    ax.set_xscale("log")
    ax.set_xlabel("rerank candidates")
    ax.set_ylabel("%")
    ax.set_ylim(0, 101)
    right = ax.twinx()
    right.plot(c, [r["p50_vs_fast"] for r in rows], "^:", color="tab:red", label="p50 latency / fast")
    right.set_ylabel("x fast p50", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    ax.set_title(f"rerank vs exact, {result['videos']:,} videos, trained tiny model", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'mode':<14}{'identical':>10}{'overlap':>9}{'R@1':>7}{'p50 ms':>9}{'p99 ms':>9}{'x fast':>8}"
        f"{'read ms':>9}"
    )
    lines = [head, "-" * len(head)]
    f = result["fast"]
    lines.append(f"{'fast':<14}{'':>10}{'':>9}{f['R1']:>7.1f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}{1:>8.2f}")
    for r in result["rerank"]:
        lines.append(
            f"{'rerank@' + str(r['candidates']):<14}{100 * r['top10_identical_share']:>9.1f}%"
            f"{100 * r['mean_top10_overlap']:>8.1f}%{r['R1']:>7.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['p50_vs_fast']:>8.2f}{r['engine_read_p50_ms']:>9.2f}"
        )
    e = result["exact"]
    lines.append(
        f"{'exact':<14}{'100.0%':>10}{'100.0%':>9}{e['R1']:>7.1f}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}"
        f"{e['p50_ms'] / f['p50_ms']:>8.1f}"
    )
    return "\n".join(lines)


def bench_model(args: argparse.Namespace) -> tuple[str | None, Config, Any, dict[str, Any]] | None:
    """(checkpoint, config, model, query-scoring args) of `--checkpoint` (decoded and scored as it
    was trained) or of `--random-model`; None, with the fix printed, when the checkpoint is missing."""
    checkpoint = None if args.random_model else args.checkpoint
    if checkpoint is not None and not Path(checkpoint).exists():
        print(f"no checkpoint at {checkpoint}: run `adaclip experiment selection` first", file=sys.stderr)
        return None
    cfg = resolve_config(load_config(args.config), checkpoint)
    model = load_encoder_model(cfg, checkpoint, "cpu", 0)
    return (
        checkpoint,
        cfg,
        model,
        {"temperature": cfg.model.qscore_temperature, "variant": cfg.model.qscore_variant},
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (loaded := bench_model(args)) is None:
        return 2
    checkpoint, cfg, model, qs = loaded
    ensure_corpus(args.corpus, args.videos, args.seed)
    meta = json.loads((args.corpus / "corpus.json").read_text())
    corpus = DataConfig(annotations=args.corpus / "annotations.jsonl", video_root=args.corpus)
    by_id = {r.video_id: r for split in ("train", "val", "test") for r in read_annotations(corpus, split)}
    items = [by_id[item["id"]] for item in meta["items"]]
    arrays = encode_corpus(cfg, checkpoint, [str(r.path) for r in items], model.model_version, args)

    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(items), size=min(args.queries, len(items)), replace=False)
    scene = [tuple(item[k] for k in ("colour", "shape", "position", "object_size")) for item in meta["items"]]
    members: dict[tuple, set[int]] = {}
    for row, s in enumerate(scene):
        members.setdefault(s, set()).add(row)
    texts = [items[i].captions[1] for i in picks]  # a paraphrase: the query is not the indexed title
    relevant = [members[scene[i]] for i in picks]
    queries = encode_queries(model, texts, cfg.data.max_text_tokens)
    text, frames = torch.from_numpy(queries), torch.from_numpy(arrays["frames"])
    scores = query_scoring_similarity(text, frames, **qs).numpy()  # (queries, videos)
    exact = [list(np.argsort(-s, kind="stable")[:TOP]) for s in scores]
    needed = candidates_needed(queries, arrays["video"], exact)

    with tempfile.TemporaryDirectory() as tmp:
        icfg = cfg.index.model_copy(
            update={
                "backend": "edge",
                "path": Path(tmp),
                "frame_datatype": args.frame_datatype,
                "frames_on_disk": args.frames_on_disk,
            }
        )
        with open_index(icfg, int(model.embed_dim), model.model_version) as index:
            start = time.perf_counter()
            for at in range(0, len(items), 1000):
                index.upsert(
                    [
                        IndexedVideo(
                            video_id(items[i].video_id, model.model_version),
                            arrays["video"][i],
                            arrays["frames"][i],
                            {
                                "source": items[i].path.name,
                                "row": i,
                                "frame_timestamps": arrays["times"][i].tolist(),
                            },
                        )
                        for i in range(at, min(at + 1000, len(items)))
                    ]
                )
            index.optimize()
            build_s = time.perf_counter() - start
            result = {
                "videos": len(items),
                "queries": len(queries),
                "checkpoint": checkpoint,
                "model_version": model.model_version,
                "frame_datatype": args.frame_datatype,
                "frames_on_disk": args.frames_on_disk,
                "frames_per_video": int(frames.shape[1]),
                "dim": int(frames.shape[2]),
                **qs,
                "encode_s": round(float(arrays["encode_s"]), 1),
                "index_build_s": round(build_s, 1),
                **measure(index, queries, exact, relevant, args, qs),
                "candidates_needed": {
                    f"p{q}": int(np.percentile(needed, q, method="higher")) for q in (50, 90, 95, 99, 100)
                },
            }
    for row in result["rerank"]:  # what an error-free ANN would give: compare top10_identical_share
        row["top10_reachable_share"] = round(float(np.mean(needed <= max(TOP, row["candidates"]))), 4)
    result["recommended_candidates"] = recommend(result)
    result["candidates_for_99"] = recommend(result, max_ratio=float("inf"))  # at any latency
    result["load_average"] = round(os.getloadavg()[0], 2)
    result["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    result["plot"] = str(plot(result, args.plot or args.out.with_suffix(".png")))
    print(table(result))
    print(
        f"recommended rerank candidates: {result['recommended_candidates']}; 99% identical from "
        f"{result['candidates_for_99']} candidates; plot: {result['plot']}"
    )
    print(
        "candidates needed to hold exact's top 10 (percentiles over queries): "
        + ", ".join(f"{k} {v}" for k, v in result["candidates_needed"].items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
