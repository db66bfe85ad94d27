"""Image-encoder and total GFLOPs per video, with learned selection and without, counted from the
modules (`adaclip.models.flops`): the tiny model and AdaCLIP's MSR-VTT model (ViT-B/32, random
weights: counting needs no download).

    python -m benchmarks.gflops_bench --out out/bench/gflops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from adaclip.config import load_config
from adaclip.models import AdaCLIP, gflops_per_video


def main(argv: list[str] | None = None) -> int:
    """Image-encoder and total GFLOPs per video, with learned selection (K of N through CLIP) and
    without (all N), for the tiny model and AdaCLIP's MSR-VTT model (ViT-B/32, random weights)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gflops_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench/gflops.json"))
    out_path = parser.parse_args(argv).out
    root = Path(__file__).resolve().parents[1] / "configs"
    unweighted = ["model.clip.pretrained=null", "model.selector.backbone_weights=null"]
    result: dict[str, Any] = {}
    for name, config in (("tiny", "tiny.yaml"), ("msrvtt_vit_b_32", "msrvtt.yaml")):
        for selection in ("learned", "all"):
            cfg = load_config(
                root / config, [*unweighted, f"model.selection={selection}", "model.aggregation=mean"]
            )
            torch.manual_seed(0)
            g = gflops_per_video(AdaCLIP.from_config(cfg.model))
            key = "with_selection" if selection == "learned" else "without_selection"
            result.setdefault(name, {"num_frames": cfg.model.num_frames, "top_k": cfg.model.top_k})[key] = {
                k: round(v, 4) for k, v in g.items()
            }
        r = result[name]
        r["image_encoder_saving"] = round(
            1 - r["with_selection"]["image_encoder"] / r["without_selection"]["image_encoder"], 3
        )
        print(
            f"{name}: GFLOPs/video {r['with_selection']['total']:.4f} with selection "
            f"({r['top_k']} of {r['num_frames']} frames through CLIP), "
            f"{r['without_selection']['total']:.4f} without"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
