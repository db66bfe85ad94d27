"""Evaluate a checkpoint, or a zero-shot open_clip model, on one split.

    adaclip eval --checkpoint runs/tiny/best [key=value ...] [--split test] [--json] [--plots DIR]
    adaclip eval --config configs/zeroshot-msrvtt.yaml model.aggregation=qscore

Ray Data decodes the videos on CPU workers (or reads them from the frame store); the driver encodes them (chunked, so 120 frames per
video stay in bounded memory) and reports text-to-video and video-to-text metrics, GFLOPs per
video and frames kept. Overrides apply on top of the checkpoint's own config, so the aggregation
(mean, mlp, qscore with its temperature and variant) can be chosen at evaluation time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaclip.checkpoint import read_checkpoint
from adaclip.config import Config, config_from_tree, load_config
from adaclip.data.annotations import caption_table
from adaclip.errors import ConfigError
from adaclip.evaluation import evaluate_batches
from adaclip.models import AdaCLIP
from adaclip.models.flops import gflops_per_video
from ray_jobs.common import emit, init_ray, job_parser, read_split
from ray_jobs.data import eval_batches, eval_dataset


def load_for_eval(
    checkpoint: str | None, config: str | None, overrides: list[str], device: str = "cpu"
) -> tuple[AdaCLIP, Config]:
    """The model to evaluate: a checkpoint (its config + overrides) or a config's zero-shot CLIP."""
    if checkpoint is None:
        cfg = load_config(config, overrides)
        return AdaCLIP.from_config(cfg.model, device=device).eval(), cfg
    state = read_checkpoint(checkpoint)
    cfg = config_from_tree(state["config"], overrides, source=f"config of checkpoint {checkpoint}")
    model = AdaCLIP.from_config(cfg.model, device=device)
    try:
        missing, _unused = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as e:
        raise ConfigError(f"checkpoint {checkpoint} does not fit the overridden config: {e}") from e
    if missing:
        raise ConfigError(
            f"checkpoint {checkpoint} has no weights for {missing[:4]}...: the overrides ask for modules "
            "it was not trained with (e.g. aggregation=mlp on a mean-pooling checkpoint)"
        )
    return model.eval(), cfg


def evaluate(model: AdaCLIP, cfg: Config, split: str, batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of `model` on `split` of the config's annotations."""
    records = read_split(cfg, split)
    texts, caption_to_video = caption_table(records, cfg.data.caption_mode)
    batch = batch_size or max(1, min(cfg.train.eval_batch_size, 2048 // cfg.model.num_frames))
    stream = eval_batches(eval_dataset(records, cfg)[0], batch)
    result = evaluate_batches(model, texts, caption_to_video, stream, cfg.data.max_text_tokens)
    result.update(
        split=split,
        aggregation=cfg.model.aggregation,
        selection=cfg.model.selection,
        num_frames=cfg.model.num_frames,
        frames_kept=cfg.model.kept_frames,
        gflops_per_video=gflops_per_video(model)["total"],
        model_version=model.model_version,
    )
    return result


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """One line per evaluated method: t2v and v2t recall, median rank, GFLOPs, frames kept."""
    head = f"{'method':<14}{'t2v R@1':>8}{'R@5':>7}{'R@10':>7}{'MedR':>6}{'v2t R@1':>9}{'R@5':>7}{'GFLOPs':>9}{'K/N':>8}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        t, v = r["t2v"], r["v2t"]
        kn = f"{r['frames_kept']}/{r['num_frames']}"
        lines.append(
            f"{name:<14}{t['R1']:>8.1f}{t['R5']:>7.1f}{t['R10']:>7.1f}{t['MedR']:>6.1f}"
            f"{v['R1']:>9.1f}{v['R5']:>7.1f}{r['gflops_per_video']:>9.3f}{kn:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("adaclip eval", "evaluate a checkpoint or a zero-shot model")
    parser.add_argument("--checkpoint", help="checkpoint file or folder (e.g. runs/tiny/best)")
    parser.add_argument("--split", help="annotation split (default: the config's test split)")
    parser.add_argument("--plots", type=Path, help="write recall and frame-selection PNGs here")
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.config is None:
        parser.error("give --checkpoint or --config")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = load_for_eval(args.checkpoint, args.config, args.overrides, device)
    init_ray(verbose=args.verbose)
    result = evaluate(model, cfg, args.split or cfg.data.test_split)
    if args.plots:
        from adaclip.plots import plot_evaluation

        result["plots"] = plot_evaluation({cfg.model.aggregation: result}, model, cfg, args.plots)
    emit(result, args.json, format_table({f"{cfg.model.selection}/{cfg.model.aggregation}": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
