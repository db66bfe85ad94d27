"""Load any open_clip CLIP (plus this project's own JSON configs) with its tokenizer and preprocessing.

`pretrained` is an open_clip tag (downloaded by open_clip when online), a local checkpoint file (an
open_clip state_dict, or one of our training checkpoints, whose ``clip.*`` weights are taken), or
None for random initialisation (the tiny config trains from scratch, so everything runs offline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import nn

from adaclip.config import ClipConfig
from adaclip.errors import ConfigError

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")


@dataclass
class ClipBundle:
    """A CLIP model with what is needed to feed it: tokenizer, input size, pixel mean/std."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    image_size: int
    embed_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int


def register_model_configs() -> None:
    """Make ``adaclip/model_configs/*.json`` (e.g. ``adaclip-tiny``) real open_clip model names."""
    if any(Path(p) == MODEL_CONFIG_DIR for p in open_clip.factory._MODEL_CONFIG_PATHS):
        return
    open_clip.add_model_config(MODEL_CONFIG_DIR)


def text_tower(model: nn.Module) -> nn.Module:
    """The module holding token_embedding / transformer / ln_final / text_projection.

    open_clip's ``CLIP`` keeps them on the model itself; ``CustomTextCLIP`` on ``model.text``.
    """
    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        return text
    if text is None and hasattr(model, "token_embedding"):
        return model
    raise ConfigError(
        f"{type(model.text).__name__} text towers (e.g. Hugging Face) do not expose per-token features; "
        "use model.word_agg=none or an open_clip model with a native text transformer"
    )


def _check_name(name: str) -> None:
    schema, _ = open_clip.factory.parse_model_name(name)
    if schema is None and open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ConfigError(
            f"unknown CLIP model {name!r}: use an open_clip name (e.g. ViT-B-32, ViT-B-16), 'adaclip-tiny', "
            f"or add a JSON config to {MODEL_CONFIG_DIR}; known: {', '.join(open_clip.list_models()[:8])}, ..."
        )


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith(CHECKPOINT_SUFFIXES)


def _extract_clip_state(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find CLIP weights in a loaded checkpoint: a raw state_dict, {'state_dict'|'model': ...}, or ours."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"CLIP checkpoint {path} holds no state_dict (got {type(obj).__name__})")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("clip.") for k in state):  # one of our AdaCLIP checkpoints
        state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    return state


def load_clip_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into ``model`` (strict), raising ConfigError when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"CLIP checkpoint file {path} does not exist: give an existing file or an open_clip tag"
        )
    if path.suffix in (".safetensors", ".npz", ".npy"):
        try:
            open_clip.load_checkpoint(model, str(path))
        except Exception as e:
            raise ConfigError(f"cannot load CLIP checkpoint {path}: {e}") from e
        return
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"cannot read CLIP checkpoint {path} (weights_only torch file expected): {e}"
        ) from e
    state = _extract_clip_state(obj, path)
    logit_scale = state.get("logit_scale")
    if logit_scale is not None and logit_scale.ndim != model.logit_scale.ndim:
        state["logit_scale"] = logit_scale.reshape(model.logit_scale.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"CLIP checkpoint {path} does not match the model architecture: {e}") from e


def _create(cfg: ClipConfig, device: str | torch.device) -> nn.Module:
    pretrained = cfg.pretrained
    if pretrained is None:
        return open_clip.create_model(cfg.name, pretrained=None, device=device)
    if Path(pretrained).is_file() or _looks_like_path(pretrained):
        model = open_clip.create_model(cfg.name, pretrained=None)
        load_clip_weights(model, pretrained)
        return model.to(device)
    if not open_clip.get_pretrained_cfg(cfg.name, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(cfg.name)
        raise ConfigError(
            f"clip.pretrained={pretrained!r} is neither an existing file nor a tag of {cfg.name!r} "
            f"(tags: {tags or 'none'}); use null for random init"
        )
    try:
        return open_clip.create_model(cfg.name, pretrained=pretrained, device=device)
    except RuntimeError as e:
        raise ConfigError(
            f"could not fetch {cfg.name!r} weights {pretrained!r} (offline?): {e}; "
            "download them once or give a local checkpoint path in clip.pretrained"
        ) from e


def load_clip(cfg: ClipConfig, device: str | torch.device = "cpu") -> ClipBundle:
    """Build the CLIP named by ``cfg`` (weights from a tag, a local file, or random) with its tokenizer."""
    register_model_configs()
    _check_name(cfg.name)
    model = _create(cfg, device)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    text = getattr(model, "text", model)
    context_length = int(
        getattr(text, "context_length", None) or open_clip.get_model_tokenize_cfg(model)["context_length"]
    )
    model_cfg = open_clip.get_model_config(cfg.name.replace("/", "-")) or {}
    embed_dim = int(model_cfg["embed_dim"]) if "embed_dim" in model_cfg else _probe_embed_dim(model, size)
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(cfg.name),
        image_size=size,
        embed_dim=embed_dim,
        mean=tuple(float(m) for m in pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(s) for s in pre.get("std", open_clip.OPENAI_DATASET_STD)),
        context_length=context_length,
    )


def load_tokenizer(cfg: ClipConfig, context_length: int | None = None) -> Callable[..., torch.Tensor]:
    """CLIP's tokenizer alone (no weights), e.g. for data workers: texts -> (T, context_length) ids."""
    register_model_configs()
    _check_name(cfg.name)
    return open_clip.get_tokenizer(cfg.name, context_length=context_length)


@torch.no_grad()
def _probe_embed_dim(model: nn.Module, size: int) -> int:
    device = next(model.parameters()).device
    return int(model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1])
