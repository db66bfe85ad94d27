"""`adaclip demo`: the whole product on embedded defaults, offline, on a laptop.

1. write a synthetic corpus of real mp4 files (only a few frames of each show its caption);
2. pre-train the tiny CLIP on single synthetic image-caption pairs;
3. train AdaCLIP (learned K-of-N selection, MLP-Score) and the uniform K-of-N baseline on Ray Train;
4. evaluate both on the held-out videos, print the table and write plots;
5. start the Ray Serve app on an embedded Qdrant Edge index with the trained model;
6. upload the held-out videos through the HTTP API;
7. run a few text queries and print the results with their moments;
8. keep serving (Ctrl-C stops) and print the URL, or stop with --stop.

A second run reuses the corpus, the pre-trained CLIP, the checkpoints and the index.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from adaclip.config import load_config
from adaclip.data.annotations import read_annotations
from adaclip.data.synth import ensure_corpus
from ray_jobs.evaluate import format_table
from ray_jobs.experiment import VARIANTS, corpus_overrides, ensure_pretrained_clip, train_and_evaluate

STEPS = 8


def step(i: int, text: str) -> None:
    print(f"\n[{i}/{STEPS}] {text}", flush=True)


def upload_videos(url: str, paths: list[Path], titles: list[str]) -> dict[str, int]:
    """POST every file to /videos; counts of new (201) and already indexed (200) videos."""
    counts = {"new": 0, "known": 0}
    with httpx.Client(base_url=url, timeout=120) as client:
        for path, title in tqdm(list(zip(paths, titles, strict=True)), desc="uploading", unit="video"):
            with path.open("rb") as f:
                response = client.post(
                    "/videos", files={"file": (path.name, f, "video/mp4")}, data={"title": title}
                )
            if response.status_code not in (200, 201):
                raise RuntimeError(f"upload of {path} failed: {response.status_code} {response.text[:200]}")
            counts["new" if response.status_code == 201 else "known"] += 1
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="adaclip demo", description="the whole product end to end")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("data/demo"), help="everything the demo builds")
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pretrain-pairs", type=int, default=3000, help="synthetic image-caption pairs")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--stop", action="store_true", help="stop after the queries instead of serving on")
    parser.add_argument("overrides", nargs="*", help="config overrides for training, e.g. train.epochs=10")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir.resolve()

    step(1, f"synthetic corpus of {args.videos} videos in {work / 'synth'}")
    corpus = ensure_corpus(work / "synth", args.videos, args.seed)

    step(2, "pre-training the tiny CLIP on synthetic image-caption pairs")
    clip = ensure_pretrained_clip(
        work / "tiny-clip.pt", args.config, args.pretrain_pairs, args.pretrain_epochs, args.seed
    )

    step(3, "training AdaCLIP (learned selection) and the uniform baseline with Ray Train")
    variants = {name: VARIANTS[name] for name in ("learned", "uniform")}
    common = [*corpus_overrides(corpus, clip, work, args.seed), *args.overrides]
    results = train_and_evaluate(variants, args.config, common, work / "runs", reuse=True)

    step(4, "held-out evaluation (text-to-video)")
    print(format_table(results))
    cfg = load_config(args.config, [*common, *VARIANTS["learned"]])
    from adaclip.checkpoint import load_model
    from adaclip.plots import plot_evaluation

    model, model_cfg = load_model(work / "runs" / "learned" / "best")
    for path in plot_evaluation(results, model, model_cfg, work / "plots"):
        print(f"plot: {path}")

    step(5, f"starting the search service on http://{args.host}:{args.port}/")
    from ray import serve

    from serve.app import build_application
    from serve.run import wait_for_signal
    from serve.schemas import AppArgs

    app_args = AppArgs(
        config=None,
        checkpoint=work / "runs" / "learned" / "best",
        overrides=[f"index.path={work / 'index'}"],
        staging_dir=work / "staging",
        media_dir=work / "media",
        streams_dir=work / "streams",
    )
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_application(app_args), name="adaclip", route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    try:
        step(6, "uploading the held-out videos through POST /videos")
        test = read_annotations(cfg.data, cfg.data.test_split)
        counts = upload_videos(url, [r.path for r in test], [r.captions[0] for r in test])
        print(f"{counts['new']} new, {counts['known']} already indexed")

        step(7, "text queries (GET /search, rerank mode)")
        from serve.client import format_results, search

        for record in test[:3]:
            print(format_results(search(url, record.captions[1], 3, "rerank", [], 30)) + "\n")

        if args.stop:
            return 0
        step(8, f"serving: open {url}/ (search page) or {url}/docs (API); Ctrl-C stops")
        wait_for_signal()
    finally:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
