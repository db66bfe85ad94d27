"""Evaluation plots (matplotlib PNGs): recall at K per method, and what the selector kept.

The frame strip shows, for a few videos, every sampled frame with the selector's score under it;
the K kept frames are framed in red. It makes the claim of frame selection visible: on the
synthetic corpus the kept frames are the ones that show the captioned object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from adaclip.config import Config  # noqa: E402
from adaclip.data.annotations import VideoRecord, read_annotations  # noqa: E402
from adaclip.models import AdaCLIP  # noqa: E402
from adaclip.video import decode_video  # noqa: E402

RECALL_KEYS = ("R1", "R5", "R10", "R50")


def plot_recall(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Text-to-video R@1/5/10/50 per method as grouped bars."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(results))
    x = np.arange(len(RECALL_KEYS))
    for i, (name, r) in enumerate(results.items()):
        values = [r["t2v"][k] for k in RECALL_KEYS]
        bars = ax.bar(x + i * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x + width * (len(results) - 1) / 2, [f"R@{k[1:]}" for k in RECALL_KEYS])
    ax.set_ylabel("text-to-video recall (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_selection(model: AdaCLIP, cfg: Config, records: Sequence[VideoRecord], path: str | Path) -> Path:
    """One row per video: its N sampled frames, selector scores and the K kept (red frames)."""
    path = Path(path)
    n = cfg.model.num_frames
    fig, axes = plt.subplots(len(records), n, figsize=(n * 0.9, len(records) * 1.3), squeeze=False)
    for row, record in zip(axes, records, strict=True):
        video = decode_video(
            record.path,
            n,
            cfg.data.eval_sampling,
            cfg.data.clip_size,
            cfg.model.selector.input_size,
            cfg.model.selector.grayscale,
        )
        clip = torch.from_numpy(video.clip_frames)[None].to(model.device)
        sel = torch.from_numpy(video.selector_frames)[None].to(model.device)
        reads_clip = model.selector is not None and model.selector.reads_clip_embeddings
        embeddings = model.encode_frames(clip) if reads_clip else None
        selection = model.select(sel, training=False, clip_embeddings=embeddings)
        kept = set(selection.indices[0].tolist())
        scores = None if selection.logits is None else selection.logits[0].float().cpu().numpy()
        for i, ax in enumerate(row):
            ax.imshow(video.clip_frames[i])
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "red" if i in kept else "none"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            label = f"{video.timestamps[i]:.1f}s" + ("" if scores is None else f"\n{scores[i]:.2f}")
            ax.set_xlabel(label, fontsize=6)
        row[0].set_title(record.captions[0][:60], fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_evaluation(
    results: Mapping[str, Mapping[str, Any]],
    model: AdaCLIP,
    cfg: Config,
    out_dir: str | Path,
    videos: int = 4,
) -> list[str]:
    """Write recall.png and selection.png (a few test videos) under `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = read_annotations(cfg.data, cfg.data.test_split)[:videos]
    return [
        str(plot_recall(results, out / "recall.png")),
        str(plot_selection(model, cfg, records, out / "selection.png")),
    ]
