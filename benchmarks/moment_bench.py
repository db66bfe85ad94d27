"""Moment accuracy on long videos: is the top result the right video, and does its moment fall
inside the clip that the query describes? Windows (`index.window_seconds`) against one point per
video (`window_seconds: null`), on a trained model.

    adaclip experiment selection                      # trains runs/experiment-selection/learned
    python -m benchmarks.moment_bench --out out/bench/moments.json   # 24 videos of 4 min, 240 queries

1. Held-out synthetic clips (`adaclip synth`, seed 13; the model was trained on seed 0's videos)
   are decoded with PyAV and re-encoded back to back into long mp4 files: `--clips-per-video`
   clips each, played at `--fps` (a 48-frame clip lasts 24 s at 2 fps; 10 clips make 4 minutes).
   Each clip's [start, end) interval in the long video, its caption and the frames where its
   object is on screen (3-6 of its 48) are recorded. Cached under `--corpus`.
2. For each arm (windows of each `--windows` length, and one point per video) every long video
   goes through the project's own path, `decode_windows_for_model` -> `encode_decoded` ->
   `to_indexed`, into a fresh embedded index (`open_index`, Qdrant Edge).
3. Queries are every clip's paraphrase caption (not the title), searched grouped (one hit per
   video) in each `--modes`. The right video is the one holding a clip with the query's scene
   (colour, shape, position, size: distinct for up to 480 clips); the moment is right when it lies
   inside such a clip's interval; its error is its distance in seconds to the nearest frame where
   that clip's object is on screen (0 when it is one of them).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from adaclip.config import Config, DataConfig
from adaclip.data.annotations import read_annotations
from adaclip.data.synth import ensure_corpus
from adaclip.encoding import (
    content_hash,
    decode_windows_for_model,
    encode_decoded,
    encode_queries,
    to_indexed,
)
from adaclip.index import open_index
from adaclip.video.encode import pick_codec, write_video
from benchmarks.agreement_bench import ROOT, bench_model
from benchmarks.serve_bench import percentiles

TOP = 5  # videos returned per query (R@1 and R@5 of the video)
MANIFEST = "moments.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.moment_bench", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/experiment-selection/learned/best")
    p.add_argument(
        "--random-model", action="store_true", help="a randomly initialised --config model (tests only)"
    )
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--videos", type=int, default=24, help="long videos")
    p.add_argument("--clips-per-video", type=int, default=10)
    p.add_argument("--fps", type=int, default=2, help="frame rate of the long videos (clips are 48 frames)")
    p.add_argument("--corpus", type=Path, default=Path("data/bench/moments"), help="cached corpus")
    p.add_argument("--seed", type=int, default=13, help="seed of the clip corpus (training used 0)")
    p.add_argument(
        "--windows", type=float, nargs="+", default=[30.0, 60.0], help="window_seconds of each windowed arm"
    )
    p.add_argument(
        "--modes", nargs="+", default=["fast", "rerank", "exact"], choices=["fast", "rerank", "exact"]
    )
    p.add_argument("--candidates", type=int, default=20, help="rerank's ANN candidates (points)")
    p.add_argument("--tolerance", type=float, default=5.0, help="W: a moment within W s of the object counts")
    p.add_argument("--out", type=Path, default=Path("out/bench/moments.json"))
    return p.parse_args(argv)


# ---- the corpus of long videos (cached) --------------------------------------------------------


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video file as (H, W, 3) uint8 RGB, in order (PyAV)."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def ensure_moments(root: Path, videos: int, clips_per_video: int, fps: int, seed: int) -> dict[str, Any]:
    """The manifest of `videos` long videos of `clips_per_video` clips at `fps` under `root`, built
    unless one with the same sizes and seed is there: {"long_videos": [{"video", "frames",
    "duration", "clips": [{"id", "caption", "title", "scene", "frames", "interval", "visible"}]}]}
    with frame spans [start, stop) in the long video and `interval` the clip's in seconds."""
    root = Path(root)
    manifest = root / MANIFEST
    key = {"videos": videos, "clips_per_video": clips_per_video, "fps": fps, "seed": seed}
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if {k: meta.get(k) for k in key} == key and all(
            (root / v["video"]).exists() for v in meta["long_videos"]
        ):
            return meta
    if videos < 1 or clips_per_video < 1 or fps < 1:
        raise ValueError(f"need videos, clips per video and fps >= 1, got {videos}, {clips_per_video}, {fps}")
    clips_dir = ensure_corpus(root / "clips", videos * clips_per_video, seed)
    clip_meta = json.loads((clips_dir / "corpus.json").read_text())
    data = DataConfig(annotations=clips_dir / "annotations.jsonl", video_root=clips_dir)
    by_id = {r.video_id: r for split in ("train", "val", "test") for r in read_annotations(data, split)}
    (root / "long").mkdir(parents=True, exist_ok=True)
    codec = pick_codec()
    long_videos = []
    for v in range(videos):
        items = clip_meta["items"][v * clips_per_video : (v + 1) * clips_per_video]
        counts: list[int] = []

        def frames(items: list[dict[str, Any]] = items, counts: list[int] = counts) -> Iterator[np.ndarray]:
            for item in items:
                counts.append(0)
                for frame in read_frames(clips_dir / item["video"]):
                    counts[-1] += 1
                    yield frame

        rel = f"long/long_{v:03d}.mp4"
        tmp = root / f"{rel}.part.mp4"
        total = write_video(tmp, frames(), fps=fps, codec=codec)
        tmp.replace(root / rel)
        clips, start = [], 0
        for item, count in zip(items, counts, strict=True):
            first, stop = item["informative"]
            clips.append(
                {
                    "id": item["id"],
                    "caption": by_id[item["id"]].captions[1],  # the query: a paraphrase, as agreement_bench
                    "title": by_id[item["id"]].captions[0],
                    "scene": [item[k] for k in ("colour", "shape", "position", "object_size")],
                    "frames": [start, start + count],
                    "interval": [start / fps, (start + count) / fps],
                    "visible": [start + first, start + stop],  # frames showing the object
                }
            )
            start += count
        long_videos.append({"video": rel, "frames": total, "duration": total / fps, "clips": clips})
    meta = {**key, "codec": codec, "clip_corpus": "clips", "long_videos": long_videos}
    manifest.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# ---- indexing and measuring --------------------------------------------------------------------


def build_arm(index, model, cfg: Config, paths: list[Path], meta: dict[str, Any]) -> dict[str, Any]:
    """Decode, encode and upsert every long video as `cfg.index` says (windows or one point), and
    the share of clips whose object is among the N sampled frames and among the K kept ones."""
    start = time.perf_counter()
    points, sampled, kept = [], [], []
    for path, video in zip(paths, meta["long_videos"], strict=True):
        decoded = decode_windows_for_model(path, cfg)
        encoded = encode_decoded(model, decoded)
        digest = content_hash(path)
        points += [to_indexed(e, digest, model.model_version, source=path.name) for e in encoded]
        for shown, frames in (
            (sampled, [d.indices for d in decoded]),
            (kept, [e.frame_indices for e in encoded]),
        ):
            at = np.concatenate(frames)
            shown += [bool(((at >= c["visible"][0]) & (at < c["visible"][1])).any()) for c in video["clips"]]
    encode_s = time.perf_counter() - start
    index.upsert(points)
    index.optimize()
    return {
        "points": len(points),
        "object_sampled": round(100 * float(np.mean(sampled)), 2),
        "object_kept": round(100 * float(np.mean(kept)), 2),
        "encode_s": round(encode_s, 2),
        "index_build_s": round(time.perf_counter() - start - encode_s, 2),
    }


def judge(meta: dict[str, Any], query: int, hits, clips: list[tuple[int, dict]], fps: float) -> dict:
    """Whether the top hit is the right video, its moment inside the right clip, and its error."""
    scene = clips[query][1]["scene"]
    names = [Path(v["video"]).name for v in meta["long_videos"]]
    holding = {v: [c for w, c in clips if w == v and c["scene"] == scene] for v, _ in clips}
    right = {v for v, cs in holding.items() if cs}
    ranked = [names.index(h.payload["source"]) for h in hits]
    out = {"video_r1": bool(ranked) and ranked[0] in right, "video_r5": bool(right & set(ranked[:TOP]))}
    out["in_clip"], out["error_s"] = False, None
    if out["video_r1"] and hits[0].moment is not None:
        t = float(hits[0].moment)
        out["in_clip"] = any(c["interval"][0] <= t < c["interval"][1] for c in holding[ranked[0]])
        out["error_s"] = min(
            max(0.0, c["visible"][0] / fps - t, t - (c["visible"][1] - 1) / fps) for c in holding[ranked[0]]
        )
    return out


def measure(index, queries: np.ndarray, meta, clips, mode: str, args, qs) -> dict[str, Any]:
    kw = {"candidates": args.candidates} if mode == "rerank" else {}
    judged, times = [], []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        hits = index.search(q, TOP, mode=mode, group=True, **qs, **kw)
        times.append((time.perf_counter() - start) * 1000)
        judged.append(judge(meta, i, hits, clips, meta["fps"]))
    errors = [j["error_s"] for j in judged if j["error_s"] is not None]
    right = sum(j["video_r1"] for j in judged)
    in_clip = sum(j["in_clip"] for j in judged)
    within = sum(e <= args.tolerance for e in errors)
    n = len(judged)
    return {
        "video_R1": round(100 * right / n, 2),
        "video_R5": round(100 * sum(j["video_r5"] for j in judged) / n, 2),
        "moment_in_clip": round(100 * in_clip / n, 2),
        "moment_in_clip_given_video": round(100 * in_clip / right, 2) if right else None,
        "moment_within_tolerance": round(100 * within / n, 2),
        "mean_abs_error_s": round(float(np.mean(errors)), 2) if errors else None,
        "median_abs_error_s": round(float(np.median(errors)), 2) if errors else None,
        **{k: v for k, v in percentiles(times).items() if k != "n"},
    }


def table(result: dict[str, Any]) -> str:
    """One row per arm and mode; percentages of the queries except the seconds and `sampled`,
    `kept` (of the clips: object among the sampled frames, among the kept ones)."""
    w = format(result["tolerance_s"], "g")
    head = (
        f"{'arm':<13}{'points':>7}{'sampled':>8}{'kept':>6}  {'mode':<7}{'video R@1':>10}{'R@5':>6}"
        f"{'in clip':>8}{'|R@1':>6}{'<=' + w + ' s':>7}{'err s':>7}{'med s':>7}{'p50 ms':>8}"
    )
    lines = [head, "-" * len(head)]

    def num(x: float | None, f: str) -> str:
        return "-" if x is None else format(x, f)

    for arm in result["arms"]:
        for i, (mode, m) in enumerate(arm["modes"].items()):
            lead = (
                f"{arm['arm']:<13}{arm['points']:>7}{arm['object_sampled']:>8.1f}{arm['object_kept']:>6.1f}"
                if i == 0
                else " " * 34
            )
            lines.append(
                f"{lead}  {mode:<7}{m['video_R1']:>10.1f}{m['video_R5']:>6.1f}{m['moment_in_clip']:>8.1f}"
                f"{num(m['moment_in_clip_given_video'], '.0f'):>6}{m['moment_within_tolerance']:>7.1f}"
                f"{num(m['mean_abs_error_s'], '.1f'):>7}{num(m['median_abs_error_s'], '.1f'):>7}"
                f"{m['p50_ms']:>8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (loaded := bench_model(args)) is None:
        return 2
    checkpoint, cfg, model, qs = loaded
    start = time.perf_counter()
    meta = ensure_moments(args.corpus, args.videos, args.clips_per_video, args.fps, args.seed)
    corpus_s = time.perf_counter() - start
    paths = [args.corpus / v["video"] for v in meta["long_videos"]]
    clips = [(v, c) for v, video in enumerate(meta["long_videos"]) for c in video["clips"]]
    queries = encode_queries(model, [c["caption"] for _, c in clips], cfg.data.max_text_tokens)

    arms = []
    for seconds in [*args.windows, None]:
        name = f"windows {seconds:g} s" if seconds is not None else "one point"
        icfg = cfg.index.model_copy(update={"window_seconds": seconds, "window_overlap_seconds": 0.0})
        with tempfile.TemporaryDirectory() as tmp:
            icfg = icfg.model_copy(update={"backend": "edge", "path": Path(tmp)})
            with open_index(icfg, int(model.embed_dim), model.model_version) as index:
                arm = {"arm": name, "window_seconds": seconds}
                arm.update(build_arm(index, model, cfg.model_copy(update={"index": icfg}), paths, meta))
                arm["modes"] = {m: measure(index, queries, meta, clips, m, args, qs) for m in args.modes}
        arms.append(arm)

    durations = [v["duration"] for v in meta["long_videos"]]
    result = {
        "long_videos": len(paths),
        "clips_per_video": args.clips_per_video,
        "queries": len(clips),
        "fps": args.fps,
        "mean_clip_s": round(float(np.mean([c["interval"][1] - c["interval"][0] for _, c in clips])), 2),
        "mean_video_s": round(float(np.mean(durations)), 2),
        "checkpoint": checkpoint,
        "model_version": model.model_version,
        "frames_per_window": cfg.model.num_frames,
        "kept_frames": cfg.model.top_k,
        **qs,
        "rerank_candidates": args.candidates,
        "tolerance_s": args.tolerance,
        "chance_in_clip_given_video": round(100 / args.clips_per_video, 2),
        "corpus_s": round(corpus_s, 1),
        "arms": arms,
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(
        f"{len(paths)} videos of {result['mean_video_s']:.0f} s ({args.clips_per_video} clips of "
        f"{result['mean_clip_s']:g} s), {len(clips)} queries, grouped search. video R@1: top video right "
        f"(chance {100 / len(paths):.0f}%); in clip: and its moment inside the clip; |R@1: of the queries "
        f"with the right video (chance {result['chance_in_clip_given_video']:.0f}%); <={result['tolerance_s']:g} s, "
        "err, med: seconds from the nearest frame showing the object (err, med: right videos only)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
