"""A deterministic synthetic corpus of real mp4 files with captions, where frame selection matters.

Each video shows its caption's object (a coloured, outlined shape at a position and size) in only
3-6 consecutive frames at a random place; all other frames are grey clutter. Uniformly sampling a
few frames often misses the object, while a learned selector can spot it in a cheap grey view.
Captions are composed from 480 attribute combinations, with three paraphrases per video.

Output layout under ``out``::

    videos/synth_00000.mp4 ...
    annotations.jsonl   one {"id", "video", "captions", "split", "title"} per line (adaclip.data format)
    corpus.json         manifest: seed, sizes, codec and per-video attributes and informative span

CLI: ``adaclip synth --out DIR --videos N --seed S`` (or ``python -m adaclip.data.synth``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from adaclip.data.synth_render import Scene, all_combinations, render
from adaclip.video.encode import pick_codec, write_video

SPLIT_SHARES = (("train", 0.70), ("val", 0.15), ("test", 0.15))
MIN_SPAN, MAX_SPAN = 3, 6  # informative frames per video
_ALT_SIZE = {"small": "little", "large": "big"}


def captions_for(scene: Scene) -> list[str]:
    """Three paraphrases of what the informative frames show."""
    c, s, p, z = scene.colour, scene.shape, scene.position, scene.size
    return [
        f"a {z} {c} {s} in the {p}",
        f"a {_ALT_SIZE[z]} {c} {s} appears in the {p} of the frame",
        f"a {c} {s}, {z}, briefly shows up in the {p}",
    ]


def split_counts(videos: int) -> dict[str, int]:
    """70/15/15 train/val/test, with at least one val and one test video once there are three."""
    if videos < 3:
        return {"train": videos, "val": 0, "test": 0}
    val = max(1, round(videos * SPLIT_SHARES[1][1]))
    test = max(1, round(videos * SPLIT_SHARES[2][1]))
    return {"train": videos - val - test, "val": val, "test": test}


def plan_scenes(videos: int, seed: int, frames: int) -> tuple[list[Scene], list[str]]:
    """Attributes, informative span and split of every video; distinct captions up to 480 videos."""
    rng = np.random.default_rng(seed)
    combos = all_combinations()
    order = np.concatenate([rng.permutation(len(combos)) for _ in range(-(-videos // len(combos)))])
    scenes = []
    for i in range(videos):
        colour, shape, position, size = combos[order[i]]
        span = int(rng.integers(MIN_SPAN, MAX_SPAN + 1))
        start = int(rng.integers(0, frames - span + 1))
        scenes.append(Scene(colour, shape, position, size, start, start + span))
    splits = [name for name, count in split_counts(videos).items() for _ in range(count)]
    splits = [splits[j] for j in rng.permutation(videos)]
    return scenes, splits


def make_corpus(
    out: Path, videos: int, seed: int, frames_per_video: int = 48, size: int = 64, fps: int = 8
) -> Path:
    """Write the corpus under ``out`` and return ``out`` (holding ``annotations.jsonl``, ``corpus.json``).

    Point ``DataConfig.annotations`` at ``out / "annotations.jsonl"`` and ``video_root`` at ``out``.

    Deterministic for a given seed: same captions, splits and pixels (the encoder runs with one
    thread and fixed options, so on the same PyAV build the files are byte-identical too).
    """
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if frames_per_video < 2 * MAX_SPAN:
        raise ValueError(f"frames_per_video must be >= {2 * MAX_SPAN}, got {frames_per_video}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32 (yuv420p needs even sides), got {size}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    codec = pick_codec()
    scenes, splits = plan_scenes(videos, seed, frames_per_video)
    lines, items = [], []
    for i, (scene, split) in enumerate(zip(scenes, splits, strict=True)):
        video_id, rel = f"synth_{i:05d}", f"videos/synth_{i:05d}.mp4"
        pixels = render(scene, np.random.default_rng([seed, i]), frames_per_video, size)
        write_video(out / rel, iter(pixels), fps=fps, codec=codec)
        captions = captions_for(scene)
        lines.append(
            {"id": video_id, "video": rel, "captions": captions, "split": split, "title": captions[0]}
        )
        items.append(
            {
                "id": video_id,
                "video": rel,
                "split": split,
                "colour": scene.colour,
                "shape": scene.shape,
                "position": scene.position,
                "object_size": scene.size,
                "informative": [scene.start, scene.stop],  # frame span [start, stop)
            }
        )
    annotations = out / "annotations.jsonl"
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = {
        "seed": seed,
        "videos": videos,
        "frames_per_video": frames_per_video,
        "size": size,
        "fps": fps,
        "codec": codec,
        "splits": split_counts(videos),
        "items": items,
    }
    (out / "corpus.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def ensure_corpus(out: Path, videos: int, seed: int) -> Path:
    """The corpus at ``out``, written unless one with the same size and seed is already there."""
    manifest = out / "corpus.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if meta.get("videos") == videos and meta.get("seed") == seed:
            return out
    return make_corpus(out, videos=videos, seed=seed)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adaclip synth", description="Write a synthetic corpus of captioned mp4 videos."
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--videos", type=int, default=200, help="number of videos (captions are distinct up to 480)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=48, help="frames per video")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adaclip synth``; prints a one-line (or JSON) summary."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        out = make_corpus(args.out, args.videos, args.seed, args.frames, args.size, args.fps)
    except ValueError as e:
        print(f"adaclip synth: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    counts = split_counts(args.videos)
    summary = {
        "out": str(args.out),
        "annotations": str(out / "annotations.jsonl"),
        "manifest": str(out / "corpus.json"),
        "videos": args.videos,
        "splits": counts,
        "seconds": round(seconds, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        split_text = " / ".join(f"{n} {name}" for name, n in counts.items())
        print(
            f"wrote {args.videos} videos ({split_text}) to {out} in {seconds:.1f} s; "
            f"annotations: {out / 'annotations.jsonl'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
