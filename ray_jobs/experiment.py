"""`adaclip experiment selection`: what do learned frame selection and MLP-Score each buy?

On the synthetic corpus (only a few frames of each video show what its caption says), models are
trained with the same budget (epochs, batch, learning rates, K of N) from the same pre-trained
tiny CLIP and scored on the held-out test split. Selection x aggregation is a full 2 x 2, so
the effect of each is measured with the other held fixed:

- learned:      the selector keeps K of N frames (Hard-Top-k), MLP-Score (AdaCLIP);
- learned_mean: the selector keeps K of N frames, mean pooling;
- uniform_mlp:  K evenly spaced of the N frames, MLP-Score;
- uniform:      K evenly spaced of the N frames, mean pooling;
- all_frames:   all N frames, mean pooling (N/K times more image-encoder work).

`adaclip experiment distill` trains `learned` again with query scoring distilled into its video
vector (`train.distill_weight`, see adaclip.training) beside `learned` itself (reused when already
trained in --out: run both experiments with the same settings so the two differ in that loss only);
`benchmarks.agreement_bench --checkpoint` then measures how many `rerank` candidates each needs.

    adaclip experiment selection [--config configs/tiny.yaml] [--videos 300] [--json] [key=value ...]
    adaclip experiment distill [--distill-weight 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from adaclip.checkpoint import CHECKPOINT_FILE
from adaclip.config import load_config
from adaclip.data.synth import ensure_corpus
from adaclip.pretrain import pretrain_clip, synthetic_pairs
from ray_jobs.common import init_ray
from ray_jobs.evaluate import evaluate, format_table, load_for_eval
from ray_jobs.train import run_training

VARIANTS: dict[str, list[str]] = {
    "learned": ["model.selection=learned", "model.aggregation=mlp"],
    "learned_mean": ["model.selection=learned", "model.aggregation=mean"],
    "uniform_mlp": ["model.selection=uniform", "model.aggregation=mlp"],
    "uniform": ["model.selection=uniform", "model.aggregation=mean"],
    "all_frames": ["model.selection=all", "model.aggregation=mean"],
}
# (better, baseline) pairs that differ in one factor only: R@1 points each factor adds
EFFECTS: dict[str, tuple[str, str]] = {
    "selection_with_mlp": ("learned", "uniform_mlp"),
    "selection_with_mean": ("learned_mean", "uniform"),
    "mlp_score_with_learned": ("learned", "learned_mean"),
    "mlp_score_with_uniform": ("uniform_mlp", "uniform"),
}


def ensure_pretrained_clip(path: Path, config: str | None, pairs: int, epochs: int, seed: int) -> Path:
    """A tiny CLIP contrastively pre-trained on synthetic image-caption pairs, reused when present."""
    if path.exists():
        return path
    cfg = load_config(config)
    images, captions = synthetic_pairs(pairs, seed, image_size=cfg.data.clip_size)
    model, _ = pretrain_clip(cfg.model, images, captions, epochs=epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.clip.state_dict(), path)
    return path


def corpus_overrides(corpus: Path, clip: Path, work: Path, seed: int) -> list[str]:
    """Point a config at a synthetic corpus, a pre-trained CLIP and a frame cache."""
    return [
        f"data.annotations={corpus / 'annotations.jsonl'}",
        f"data.video_root={corpus}",
        f"data.cache_dir={work / 'cache'}",
        f"model.clip.pretrained={clip}",
        f"train.seed={seed}",
    ]


def train_and_evaluate(
    variants: dict[str, list[str]], config: str | None, common: list[str], out: Path, reuse: bool = False
) -> dict[str, dict[str, Any]]:
    """Train each variant into `out/<name>` (kept when `reuse` and a best checkpoint exists),
    then evaluate its best checkpoint on the test split."""
    init_ray()
    results = {}
    for name, variant in variants.items():
        run_dir = out / name
        cfg = load_config(config, [*common, *variant, f"train.output_dir={run_dir}"])
        if not (reuse and (run_dir / "best" / CHECKPOINT_FILE).exists()):
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
            print(f"[{name}] training with {' '.join(variant)}", file=sys.stderr, flush=True)
            run_training(cfg)
        model, eval_cfg = load_for_eval(str(run_dir / "best"), None, [])
        results[name] = evaluate(model, eval_cfg, eval_cfg.data.test_split)
    return results


def distill_variants(
    weight: float,
) -> tuple[tuple[dict[str, list[str]], dict[str, list[str]]], dict[str, tuple[str, str]]]:
    """(`learned`, `learned` with distillation at `weight`, named by it so runs at other weights
    are kept apart) and the effect between them."""
    name = f"learned_distill{weight:g}"
    distilled = {name: [*VARIANTS["learned"], f"train.distill_weight={weight}"]}
    return ({"learned": VARIANTS["learned"]}, distilled), {"distillation": (name, "learned")}


def run_experiment(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str]]]:
    """Every variant of the experiment on the synthetic corpus, from one pre-trained tiny CLIP."""
    out = Path(args.out)
    corpus = ensure_corpus(Path(args.corpus), args.videos, args.seed)
    clip = ensure_pretrained_clip(
        out / "tiny-clip.pt", args.config, args.pretrain_pairs, args.pretrain_epochs, args.seed
    )
    common = [*corpus_overrides(corpus, clip, out, args.seed), *args.overrides]
    if args.name == "distill":  # `learned` is the selection experiment's when it has been trained
        (baseline, distilled), effects = distill_variants(args.distill_weight)
        results = train_and_evaluate(baseline, args.config, common, out, reuse=True)
        return results | train_and_evaluate(distilled, args.config, common, out, reuse=args.reuse), effects
    return train_and_evaluate(VARIANTS, args.config, common, out, reuse=args.reuse), EFFECTS


def summary(
    results: dict[str, dict[str, Any]], effects: dict[str, tuple[str, str]] = EFFECTS
) -> dict[str, dict[str, float]]:
    """R1, R5, MedR and GFLOPs per video for each variant, and `effects`: the R@1 points that
    learned selection and MLP-Score each add with the other factor fixed."""
    out: dict[str, dict[str, float]] = {
        name: {
            "R1": r["t2v"]["R1"],
            "R5": r["t2v"]["R5"],
            "MedR": r["t2v"]["MedR"],
            "gflops_per_video": r["gflops_per_video"],
        }
        for name, r in results.items()
    }
    out["effects"] = {
        name: round(results[a]["t2v"]["R1"] - results[b]["t2v"]["R1"], 2)
        for name, (a, b) in effects.items()
        if a in results and b in results
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaclip experiment", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["selection", "distill"], help="which experiment")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument(
        "--corpus", default="data/experiment/synth", help="synthetic corpus folder (made if missing)"
    )
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-pairs", type=int, default=3000)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--out", default="runs/experiment-selection")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by variant")
    parser.add_argument("--reuse", action="store_true", help="keep variants already trained in --out")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="distill: train.distill_weight")
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every variant")
    args = parser.parse_args(argv)
    results, effects = run_experiment(args)
    if args.json:
        print(json.dumps(summary(results, effects)))
    else:
        print(format_table(results))
        added = summary(results, effects)["effects"]
        print("R@1 added: " + ", ".join(f"{k} {v:+.1f}" for k, v in added.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
