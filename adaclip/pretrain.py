"""Contrastive pre-training of a CLIP on single image-caption pairs.

A real CLIP arrives knowing what colours and shapes look like; the tiny CLIP of the demo and the
selection experiment starts from random weights, so it first learns that from synthetic images
(one object on grey clutter, captioned like the synthetic videos). AdaCLIP training then starts
from an encoder that works, as it does with real weights. Pure PyTorch, CPU friendly.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adaclip.config import ModelConfig, load_config
from adaclip.data.synth import captions_for
from adaclip.data.synth_render import Scene, all_combinations, render
from adaclip.models import AdaCLIP
from adaclip.ops import symmetric_contrastive_loss
from adaclip.video.transforms import center_crop, resize_rgb


def synthetic_pairs(
    count: int, seed: int, size: int = 64, image_size: int = 32
) -> tuple[np.ndarray, list[str]]:
    """`count` images (count, image_size, image_size, 3) uint8, each showing one captioned object."""
    rng = np.random.default_rng(seed)
    combos = all_combinations()
    images, captions = [], []
    for i in range(count):
        colour, shape, position, obj_size = combos[int(rng.integers(len(combos)))]
        frame = render(
            Scene(colour, shape, position, obj_size, 0, 1), np.random.default_rng([seed, i]), 1, size
        )[0]
        frame = center_crop(resize_rgb(frame, image_size, image_size)[None], image_size)[0]
        images.append(frame)
        options = captions_for(Scene(colour, shape, position, obj_size, 0, 1))
        captions.append(options[int(rng.integers(len(options)))])
    return np.stack(images), captions


def pretrain_clip(
    model_cfg: ModelConfig,
    images: np.ndarray,
    captions: list[str],
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[AdaCLIP, list[float]]:
    """Train the CLIP inside an AdaCLIP of `model_cfg` on (image, caption) pairs; returns it and per-epoch losses."""
    torch.manual_seed(seed)
    model = AdaCLIP.from_config(model_cfg)
    clip_params = [p for p in model.clip.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(clip_params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    steps = epochs * math.ceil(len(images) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    tokens = model.tokenize(captions)
    frames = torch.from_numpy(images)[:, None]  # (M, 1, S, S, 3) uint8: one frame per "video"
    losses = []
    model.train()
    for _ in tqdm(range(epochs), desc="pre-training CLIP", disable=not progress):
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            text = model.encode_text(tokens[idx])  # (b, D)
            image = model.encode_frames(frames[idx])[:, 0]  # (b, D)
            sims = (
                torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(image, dim=-1).T
            )
            loss = symmetric_contrastive_loss(model.clip.logit_scale.exp() * sims)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            model.clamp_logit_scale()
            total += loss.item() * len(idx)
        losses.append(total / len(images))
    return model.eval(), losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaclip pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml", help="config naming the CLIP to pre-train")
    parser.add_argument("--out", type=Path, required=True, help="where to write the CLIP state_dict (.pt)")
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    start = time.perf_counter()
    images, captions = synthetic_pairs(args.pairs, args.seed, image_size=cfg.data.clip_size)
    model, losses = pretrain_clip(
        cfg.model, images, captions, epochs=args.epochs, seed=args.seed, progress=not args.json
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.clip.state_dict(), args.out)
    summary = {
        "out": str(args.out),
        "pairs": args.pairs,
        "epochs": args.epochs,
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    print(
        json.dumps(summary)
        if args.json
        else f"pre-trained CLIP -> {args.out} (loss {losses[0]:.3f} -> {losses[-1]:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
