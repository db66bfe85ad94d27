"""Checkpoints: model weights, the config that built them and the model version, in one file.

Everything stored is tensors and plain Python values, so `torch.load(..., weights_only=True)`
reads it: loading a checkpoint never runs code from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaclip.config import Config
from adaclip.errors import ConfigError
from adaclip.models import AdaCLIP

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: str | Path, model: AdaCLIP, cfg: Config, **extra: Any) -> Path:
    """Write `model` and `cfg` (plus e.g. epoch, optimizer state, metrics) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "model_version": model.model_version,
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with weights_only=True; a directory means its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[AdaCLIP, Config]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode."""
    state = read_checkpoint(path)
    cfg = Config.model_validate(state["config"])
    model = AdaCLIP.from_config(cfg.model, device=device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


CHECKPOINT_KEY = "model.checkpoint"  # an override naming the checkpoint to use (not a Config field)


def split_checkpoint(overrides: list[str]) -> tuple[list[str], str | None]:
    """Pull `model.checkpoint=PATH` out of command-line overrides: (the rest, PATH or None)."""
    rest, checkpoint = [], None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == CHECKPOINT_KEY:
            checkpoint = value or None
        else:
            rest.append(item)
    return rest, checkpoint
