"""Serving benchmark: search latency per mode at N indexed videos, rerank vs exact agreement, and
ingestion throughput versus decoding alone. Figures, not tests.

    python -m benchmarks.serve_bench --out out/serve_bench.json                 # tiny model, D=64
    python -m benchmarks.serve_bench --out out/b.json --config configs/msrvtt.yaml \
        model.clip.pretrained=null model.selector.backbone_weights=null           # ViT-B-32, D=512

1. Index: N synthetic videos (default 100000) go straight in through `VideoIndex.upsert`, each
   with 12 frame vectors around a random topic and the normalised mean as its video vector (so
   queries have real matches and rerank's prefetch is a fair test); queries are noisy frames.
   Latency of `VideoIndex.search` per mode, and how often rerank's top 10 equals exact's (exact
   computed by brute force over the same arrays, checked against the index's own exact mode).
   Beside it, one query's text encoding alone (the traced path the ingress runs): with `fast`,
   the model and index work an HTTP search adds to the Serve floor below.
2. Serve: the real app on that index; HTTP GET /search latency per mode (text encoding included)
   against the floor of an ingress answering alone (GET /openapi.json), the search's time
   inside the replica as its handler reports it (`took_ms`), and the CPU time each request costs
   Serve's proxy, the ingress replica and the whole machine (clients included; Linux /proc).
   With `--direct-ingress`, the same replica's floor and `fast` again through Serve's experimental
   direct ingress (the replica's own HTTP server, no proxy hop), in the same run.
3. Ingestion: videos/s of decoding alone, of the in-process ingestion path (decode, encode,
   upsert) and of the Ray Data bulk job, on the same synthetic files.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from adaclip.config import Config, load_config
from adaclip.encoding import (
    QueryEncoder,
    content_hash,
    decode_for_model,
    encode_decoded,
    load_encoder_model,
    to_indexed,
)
from adaclip.index import IndexedVideo, VideoIndex, open_index, video_id
from adaclip.index.rescoring import query_scoring_scores

MODES = ("fast", "rerank", "exact")
TEXTS = ["a small red circle in the top left", "a big blue square", "a green triangle appears in the middle"]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "n": len(a),
    }


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


# ---- 1. index -----------------------------------------------------------------------------------


def synthetic_videos(n: int, k: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """frames (n, k, D) around one random topic per video; video vectors (n, D) = unit mean."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, k, dim), np.float32)
    for at in range(0, n, 10000):
        m = min(10000, n - at)
        topic = rng.standard_normal((m, 1, dim), dtype=np.float32)
        chunk = topic + 1.2 * rng.standard_normal((m, k, dim), dtype=np.float32)
        frames[at : at + m] = chunk / np.linalg.norm(chunk, axis=-1, keepdims=True)
    video = frames.mean(axis=1)
    return frames, video / np.linalg.norm(video, axis=-1, keepdims=True)


def synthetic_queries(frames: np.ndarray, q: int, seed: int, kind: str = "video") -> np.ndarray:
    """Noisy queries with a true match (cosine ~0.7 to it): `video` queries sit near a video's mean
    (the text describes the whole clip), `moment` queries near one of its frames (one instant)."""
    rng = np.random.default_rng(seed + (1 if kind == "video" else 2))
    rows = rng.integers(len(frames), size=q)
    if kind == "video":
        picks = frames[rows].mean(axis=1)
    else:
        picks = frames[rows, rng.integers(frames.shape[1], size=q)]
    picks = picks / np.linalg.norm(picks, axis=-1, keepdims=True)
    noisy = picks + rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(frames.shape[-1])
    return noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)


def ids_of(n: int, version: str) -> list[str]:
    return [video_id(f"bench-{i:08d}", version) for i in range(n)]


def fill_index(index: VideoIndex, frames: np.ndarray, video: np.ndarray, ids: list[str]) -> float:
    """Upsert everything through the index API, then optimise; seconds taken."""
    start = time.perf_counter()
    stamps = [float(t) for t in np.arange(frames.shape[1])]
    for at in range(0, len(ids), 1000):
        index.upsert(
            [
                IndexedVideo(
                    ids[i], video[i], frames[i], {"source": f"bench/{i}.mp4", "frame_timestamps": stamps}
                )
                for i in range(at, min(at + 1000, len(ids)))
            ]
        )
    index.optimize()
    return time.perf_counter() - start


def exact_top(frames: np.ndarray, query: np.ndarray, k: int, temperature: float, ids: list[str]) -> list[str]:
    """Brute-force query scoring over every video (the `exact` reference), top k ids."""
    scores = np.concatenate(
        [
            query_scoring_scores(query, list(frames[at : at + 20000]), temperature)
            for at in range(0, len(frames), 20000)
        ]
    )
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def bench_index(index: VideoIndex, frames, queries, ids, args, temperature: float) -> dict[str, Any]:
    """Latency per mode (and rerank with a 10x prefetch), and rerank's agreement with exact."""
    out: dict[str, Any] = {}
    wide = 10 * index.rerank_candidates
    runs = [(m, m, None) for m in MODES] + [(f"rerank@{wide}", "rerank", wide)]
    for name, mode, cands in runs:
        qs = queries[: args.exact_queries] if mode == "exact" else queries[: args.queries]
        samples = []
        for q in qs:
            start = time.perf_counter()
            hits = index.search(q, 10, mode, candidates=cands, temperature=temperature)
            samples.append((time.perf_counter() - start) * 1000)
            if mode == "exact":  # the index's exact mode is the brute force
                assert [h.id for h in hits] == exact_top(frames, q, 10, temperature, ids)
        out[name] = percentiles(samples)
    for kind in ("video", "moment"):
        checked = synthetic_queries(frames, args.agreement_queries, args.seed, kind)
        exact = [exact_top(frames, q, 10, temperature, ids) for q in checked]
        for cands in (index.rerank_candidates, wide):
            same, overlap = 0, 0.0
            for q, best in zip(checked, exact, strict=True):
                rerank = [
                    h.id for h in index.search(q, 10, "rerank", candidates=cands, temperature=temperature)
                ]
                same += rerank == best
                overlap += len(set(rerank) & set(best)) / 10
            out[f"rerank@{cands}_vs_exact_{kind}_queries"] = {
                "top10_equal_share": round(same / max(1, len(checked)), 4),
                "mean_top10_overlap": round(overlap / max(1, len(checked)), 4),
                "queries": len(checked),
            }
    return out


# ---- 2. serve -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_ingress_env(port: int) -> dict[str, str]:
    """Environment of a Ray whose Serve ingress replica also answers HTTP itself on `port` (Serve's
    experimental direct ingress, Ray 2.60; the range's upper end is exclusive)."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0.5",
    }


@contextmanager
def running_app(
    cfg_path: str | None, overrides: list[str], index_dir: Path, seed: int = 0, direct_port: int | None = None
) -> Iterator[str]:
    """The real Serve app on a fresh local Ray, on a free 127.0.0.1 port, over `index_dir` (its
    staging, media and streams folders beside it): yields its URL; stops Serve and Ray after. With
    `direct_port` the ingress replica also answers on that port without the proxy (see
    `direct_ingress_env`)."""
    import ray
    from ray import serve

    from serve.app import build_app

    port = free_port()
    while port == direct_port:
        port = free_port()
    env = direct_ingress_env(direct_port) if direct_port else {}
    # read by the Serve controller and replicas this Ray starts; restored after
    with mock.patch.dict(os.environ, env):
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app_args = {
            "config": cfg_path,
            "overrides": [*overrides, f"index.path={index_dir}"],
            "seed": seed,
            **{f"{name}_dir": str(index_dir.parent / name) for name in ("staging", "media", "streams")},
        }
        serve.run(build_app(app_args), name="bench", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def bench_serve(cfg_path: str | None, overrides: list[str], index_dir: Path, args) -> dict[str, Any]:
    import httpx

    direct_port = free_port() if args.direct_ingress else None
    with running_app(cfg_path, overrides, index_dir, args.seed, direct_port) as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            assert client.get("/healthz").status_code == 200
            for _ in range(10):  # warm up both hops and the text batcher
                client.get("/search", params={"q": TEXTS[0], "k": 10, "mode": "fast"})
            exact = timed(
                lambda: client.get("/search", params={"q": TEXTS[1], "k": 10, "mode": "exact"}),
                args.exact_queries,
            )
        out: dict[str, Any] = {"exact": percentiles(exact)}
        floor = ("GET", "/openapi.json", None)

        def search(mode: str) -> Callable[[int], tuple[str, str, dict[str, Any]]]:
            return lambda i: ("GET", "/search", {"q": TEXTS[i % 3], "k": 10, "mode": mode})

        bounds = (args.queries, args.load_seconds)
        processes = serve_processes()
        for clients in args.clients:
            out[f"{clients}_clients"] = {
                "floor_ingress_only": load(url, lambda i: floor, clients, *bounds, processes=processes),
                **{
                    mode: load(url, search(mode), clients, *bounds, processes=processes)
                    for mode in ("fast", "rerank")
                },
            }
        if direct_port:  # the same replica through its own HTTP server: no proxy, no actor calls
            direct = f"http://127.0.0.1:{direct_port}"
            warm = load(direct, search("fast"), 1, 20, args.load_seconds)
            if warm["errors"]:
                raise RuntimeError(f"direct ingress at {direct} answered {warm['errors']} of 20 with errors")
            out["direct_ingress"] = {
                f"{clients}_clients": {
                    "floor_ingress_only": load(
                        direct, lambda i: floor, clients, *bounds, processes=processes
                    ),
                    "fast": load(direct, search("fast"), clients, *bounds, processes=processes),
                }
                for clients in args.clients
            }
        out["uploads"] = upload_load(url, args)
        return out


def serve_processes() -> dict[str, list[int]]:
    """pids of Serve's proxies and of the ingress replicas, from Ray's actor table (a private API:
    the public state API needs the dashboard, which the benchmark leaves out so it takes no CPU);
    empty, with a warning, where the table cannot be read (the CPU figures are then left out)."""
    import ray

    found: dict[str, list[int]] = {"proxy": [], "ingress": []}
    try:
        for actor in ray._private.state.actors().values():
            name, pid = actor.get("ActorClassName", ""), actor.get("Pid")
            if actor.get("State") == "ALIVE" and pid:
                if name == "ProxyActor":
                    found["proxy"].append(int(pid))
                elif name.endswith(":SearchAPI"):
                    found["ingress"].append(int(pid))
    except Exception as e:  # noqa: BLE001 - a figure left out, not a failed benchmark
        print(f"serve_bench: no CPU figures, Ray's actor table could not be read: {e}", file=sys.stderr)
        return {}
    missing = [role for role, pids in found.items() if not pids]
    if missing:
        print(f"serve_bench: no CPU figures for {missing}: not in Ray's actor table", file=sys.stderr)
    return {role: pids for role, pids in found.items() if pids}


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time used so far by process `pid` (user + system), or without one the busy time of the
    whole machine (all cores, whatever runs there); None where /proc cannot tell (not Linux,
    process gone)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        if pid is None:  # user nice system idle iowait irq softirq steal (guest is inside user)
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            return (sum(fields) - fields[3] - fields[4] - fields[7]) / tick
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None


def cpu_snapshot(processes: dict[str, list[int]]) -> dict[str, float | None]:
    """CPU seconds so far of each role's processes together, and of the whole machine."""
    out: dict[str, float | None] = {}
    for role, pids in processes.items():
        times = [cpu_seconds(pid) for pid in pids]
        out[role] = None if None in times else sum(times)
    return {**out, "machine": cpu_seconds()}


def load(
    url: str,
    request: Callable[[int], tuple],
    clients: int,
    count: int,
    seconds: float,
    files=None,
    processes: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """`clients` concurrent clients send `request(i)` (method, path, params; `files(i)` for a
    POST) until `count` requests are done or `seconds` have passed: latency percentiles,
    throughput and errors (status >= 400 or no answer); for searches also the p50 of the time
    their handler reported (`took_ms`: the search inside the replica, no HTTP or Serve routing);
    with `processes` ({role: pids}) the CPU milliseconds per request each role and the whole
    machine spent meanwhile."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    counter, lock, samples, errors, handler = [0], threading.Lock(), [], [0], []
    deadline = time.perf_counter() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.perf_counter() < deadline:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                if i >= count:
                    return
                method, path, params = request(i)
                start = time.perf_counter()
                try:
                    if method == "GET":
                        response = client.get(path, params=params)
                    else:
                        response = client.post(path, files=files(i), data=params)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - start) * 1000
                took = response.json()["took_ms"] if status == 200 and path == "/search" else None
                with lock:
                    samples.append(elapsed)
                    errors[0] += not 0 < status < 400
                    if took is not None:
                        handler.append(took)

    cpu_before = cpu_snapshot(processes) if processes else {}
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - start
    cpu_after = cpu_snapshot(processes) if processes else {}
    cpu = {
        name: round((cpu_after[name] - before) * 1000 / max(1, len(samples)), 2)
        for name, before in cpu_before.items()
        if before is not None and cpu_after[name] is not None
    }
    return {
        **percentiles(samples or [float("nan")]),
        "per_s": round(len(samples) / wall, 1),
        "errors": errors[0],
        **({"handler_p50_ms": round(float(np.percentile(handler, 50)), 3)} if handler else {}),
        **({"cpu_ms_per_request": cpu} if cpu else {}),
    }


def upload_load(url: str, args) -> dict[str, Any]:
    """Concurrent uploads of distinct small synthetic videos (`args.upload_clients` clients)."""
    from adaclip.data.synth import make_corpus

    with tempfile.TemporaryDirectory(prefix="uploads-") as tmp:
        corpus = make_corpus(Path(tmp), videos=args.uploads, seed=args.seed + 99)
        files = sorted((corpus / "videos").glob("*.mp4"))
        blobs = [f.read_bytes() for f in files]
    result = load(
        url,
        lambda i: ("POST", "/videos", {"title": files[i].stem}),
        args.upload_clients,
        len(files),
        args.load_seconds,
        files=lambda i: {"file": (files[i].name, blobs[i], "video/mp4")},
    )
    return {**result, "videos": len(files), "clients": args.upload_clients}


# ---- 3. ingestion -------------------------------------------------------------------------------


def bench_ingest(cfg: Config, cfg_path: str | None, overrides: list[str], work: Path, args) -> dict[str, Any]:
    import shutil

    from adaclip.data.synth import make_corpus

    work = work / "ingest"
    shutil.rmtree(work, ignore_errors=True)  # fresh indexes: a resumed job would skip everything
    make_corpus(work / "corpus", videos=args.ingest_videos, seed=args.seed)
    files = sorted((work / "corpus" / "videos").glob("*.mp4"))
    start = time.perf_counter()
    decoded = [decode_for_model(f, cfg) for f in files]
    decode_s = time.perf_counter() - start

    model = load_encoder_model(cfg, None, "cuda" if torch.cuda.is_available() else "cpu", args.seed)
    icfg = cfg.index.model_copy(update={"path": work / "inproc-index"})
    start = time.perf_counter()
    with open_index(icfg, int(model.embed_dim), model.model_version) as index:
        for at in range(0, len(files), 8):
            batch = files[at : at + 8]
            encoded = encode_decoded(model, [decode_for_model(f, cfg) for f in batch])
            index.upsert(
                [
                    to_indexed(e, content_hash(f), model.model_version, f.name)
                    for f, e in zip(batch, encoded, strict=True)
                ]
            )
    inproc_s = time.perf_counter() - start
    del decoded

    from ray_jobs.ingest import ingest, parse_args

    job_args = parse_args(
        [
            str(work / "corpus" / "videos"),
            *overrides,
            f"index.path={work / 'job-index'}",
            "--json",
            f"--seed={args.seed}",
        ]
        + (["--config", cfg_path] if cfg_path else [])
    )
    result = ingest(job_args)
    n = len(files)
    return {
        "videos": n,
        "decode_only_videos_per_s": round(n / decode_s, 2),
        "inprocess_ingest_videos_per_s": round(n / inproc_s, 2),
        "ray_data_job_videos_per_s": result["videos_per_s"],
        "ray_data_job_pipeline_videos_per_s": round(
            result["ingested"] / max(result["pipeline_seconds"], 1e-9), 2
        ),
        "ray_data_job_seconds_incl_startup": result["seconds"],
    }


# ---- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="serve_bench", description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides (the model sets D and the text encoder)")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"))
    p.add_argument("--videos", type=int, default=100_000)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--queries", type=int, default=200, help="timed fast/rerank queries")
    p.add_argument("--exact-queries", type=int, default=5, help="timed exact queries (each scans everything)")
    p.add_argument("--agreement-queries", type=int, default=100)
    p.add_argument("--ingest-videos", type=int, default=48)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent HTTP clients")
    p.add_argument("--load-seconds", type=float, default=30.0, help="time bound per HTTP load figure")
    p.add_argument("--uploads", type=int, default=16, help="videos uploaded concurrently")
    p.add_argument("--upload-clients", type=int, default=4)
    p.add_argument("--skip", action="append", default=[], choices=["index", "serve", "ingest"])
    p.add_argument(
        "--direct-ingress",
        action="store_true",
        help="also measure the floor and `fast` through Serve's experimental direct ingress (the "
        "ingress replica's own HTTP server, no proxy) in the same run",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads in this process (Serve replicas run 1)"
    )
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--out", required=True, help="JSON results path")
    return p.parse_intermixed_args(argv)


def table(r: dict[str, Any]) -> str:
    lines = [f"serve bench: {r['videos']} videos x {r['frames']} frames, D={r['dim']} ({r['device']})"]
    rows = [("index", mode, v) for mode, v in (r.get("index") or {}).items()]
    for key, v in (r.get("serve") or {}).items():
        if "p50_ms" in v:
            rows.append(("serve", key, v))
        elif key == "direct_ingress":  # one level per client count below it
            rows += [("direct", f"{c} {mode}", w) for c, per in v.items() for mode, w in per.items()]
        else:  # one level per client count
            rows += [("serve", f"{key} {mode}", w) for mode, w in v.items()]
    for part, mode, v in rows:
        if "p50_ms" in v:
            extra = f"  {v['per_s']:>7.1f}/s  errors {v['errors']}" if "errors" in v else ""
            if "handler_p50_ms" in v:
                extra += f"  handler p50 {v['handler_p50_ms']:.2f} ms"
            if "cpu_ms_per_request" in v:
                extra += "  cpu/request " + " ".join(
                    f"{k} {ms:.1f}" for k, ms in v["cpu_ms_per_request"].items()
                )
            lines.append(
                f"  {part:<6} {mode:<28} p50 {v['p50_ms']:>9.2f} ms  p99 {v['p99_ms']:>9.2f} ms  (n={v['n']}){extra}"
            )
    for key, a in (r.get("index") or {}).items():
        if key.endswith("_queries"):
            what = key.replace("_vs_exact_", " vs exact, ").replace("_queries", " queries")
            lines.append(
                f"  {what}: top-10 equal {a['top10_equal_share']:.0%}, "
                f"mean overlap {a['mean_top10_overlap']:.0%} ({a['queries']} queries)"
            )
    if "build_s" in r:
        lines.append(
            f"  build: {r['build_s']:.1f} s ({r['videos'] / r['build_s']:.0f} videos/s incl. optimise)"
        )
    for key, value in (r.get("ingest") or {}).items():
        lines.append(f"  ingest {key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="serve-bench-"))
    model = load_encoder_model(cfg, None, "cpu", args.seed)
    dim, version, temperature = int(model.embed_dim), model.model_version, cfg.model.qscore_temperature
    if "index" not in args.skip:  # a query's text path alone, as the ingress runs it
        encode = QueryEncoder(model, cfg.data.max_text_tokens)
        text_ms = percentiles(timed(lambda: encode(TEXTS[:1]), args.queries))
    del model
    result: dict[str, Any] = {
        "videos": args.videos,
        "frames": args.frames,
        "dim": dim,
        "device": "cpu" if not torch.cuda.is_available() else "cuda",
    }
    index_dir = work / "index"
    if "index" not in args.skip or "serve" not in args.skip:
        frames, video = synthetic_videos(args.videos, args.frames, dim, args.seed)
        ids = ids_of(args.videos, version)
        with open_index(cfg.index.model_copy(update={"path": index_dir}), dim, version) as index:
            if index.count() != args.videos:
                result["build_s"] = round(fill_index(index, frames, video, ids), 2)
            if "index" not in args.skip:
                queries = synthetic_queries(frames, args.queries, args.seed)
                result["index"] = {
                    "encode_one_query": text_ms,
                    **bench_index(index, frames, queries, ids, args, temperature),
                }
        del frames, video
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))  # partial results survive a later failure
    if "serve" not in args.skip:
        result["serve"] = bench_serve(args.config, args.overrides, index_dir, args)
        out.write_text(json.dumps(result, indent=1))
    if "ingest" not in args.skip:
        result["ingest"] = bench_ingest(cfg, args.config, args.overrides, work, args)
        out.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
