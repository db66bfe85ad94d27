"""AdaCLIP's frame selector ("policy", SPEC section 2): cheap per-frame features -> one logit per frame.

backbone (raw pixels | torchvision CNN | CLIP embeddings) -> temporal context (none | transformer |
lstm | bilstm) -> scorer (mlp | linear). Hard-Top-k on the logits lives in ``adaclip.ops``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from open_clip.transformer import QuickGELU, Transformer
from torch import Tensor, nn

from adaclip.config import SelectorConfig
from adaclip.errors import ConfigError

CNN_BACKBONES = ("mobilenet_v3_large", "mobilenet_v2", "resnet50")
CLIP_BACKBONES = ("clip", "frozen_clip")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def num_heads(width: int, head_width: int = 64) -> int:
    """width // 64 heads (at least 1), lowered until it divides width."""
    heads = max(1, width // head_width)
    while width % heads:
        heads -= 1
    return heads


def _load_cnn_weights(model: nn.Module, name: str, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"selector.backbone_weights={weights!r}: no such file; use 'imagenet', a local state_dict file, or null"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise ConfigError(f"cannot load {name} weights from {path}: {e}") from e


def build_cnn(name: str, weights: str | None) -> tuple[nn.Module, int]:
    """A torchvision CNN with its classifier removed: (n, 3, s, s) -> (n, feat_dim) pooled features.

    ``weights``: None (random init), 'imagenet' (torchvision's default weights; downloaded only
    because the user asked), or a local state_dict file of the full torchvision model.
    """
    enum = torchvision.models.get_model_weights(name).DEFAULT if weights == "imagenet" else None
    model = torchvision.models.get_model(name, weights=enum)
    if weights not in (None, "imagenet"):
        _load_cnn_weights(model, name, weights)
    if name == "mobilenet_v3_large":
        # as AdaCLIP: keep Linear(960, 1280) + Hardswish, drop dropout and the 1000-way layer
        model.classifier = nn.Sequential(model.classifier[0], model.classifier[1])
        return model, 1280
    if name == "mobilenet_v2":
        model.classifier = nn.Identity()
        return model, 1280
    model.fc = nn.Identity()  # resnet50
    return model, 2048


class TemporalContext(nn.Module):
    """Per-frame features (B, N, F) -> contextual features (B, N, out_dim).

    ``none`` (AdaCLIP's --no_rnn) passes the backbone features straight to the scorer (out_dim = F).
    """

    def __init__(self, kind: str, in_dim: int, hidden_dim: int, num_frames: int):
        super().__init__()
        self.kind = kind
        self.out_dim = in_dim if kind == "none" else hidden_dim
        if kind == "transformer":
            self.projection = nn.Linear(in_dim, hidden_dim)
            self.position_embeddings = nn.Embedding(num_frames, hidden_dim)
            self.transformer = Transformer(hidden_dim, 1, num_heads(hidden_dim), act_layer=QuickGELU)
        elif kind in ("lstm", "bilstm"):
            self.rnn = nn.LSTM(in_dim, hidden_dim, batch_first=True, bidirectional=kind == "bilstm")

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x  # (B, N, F)
        if self.kind == "transformer":
            n = x.shape[1]
            if n > self.position_embeddings.num_embeddings:
                raise ValueError(
                    f"selector got N={n} frames but has position embeddings for "
                    f"{self.position_embeddings.num_embeddings}; set model.num_frames"
                )
            pos = torch.arange(n, device=x.device)
            x = self.projection(x) + self.position_embeddings(pos)  # (B, N, H)
            return self.transformer(x)  # (B, N, H)
        out, _ = self.rnn(x)  # (B, N, H) or (B, N, 2H)
        if self.kind == "bilstm":
            out = out.unflatten(-1, (2, -1)).mean(dim=-2)  # (B, N, 2, H) -> (B, N, H): directions averaged
        return out


def build_scorer(kind: str, in_dim: int, hidden: int) -> nn.Sequential:
    """mlp: Linear -> ReLU -> Linear(1); linear: Linear(1). Kaiming-normal weights, zero biases (AdaCLIP)."""
    if kind == "mlp":
        scorer = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    else:
        scorer = nn.Sequential(nn.Linear(in_dim, 1))
    for layer in scorer:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return scorer


class FrameSelector(nn.Module):
    """Scores the N frames of each video from their cheap views (or CLIP embeddings): -> logits (B, N).

    Pixel backbones read uint8 views (B, N, s, s, C) (C = 1 grey for ``raw``); the ``clip`` backbone
    reads the CLIP frame embeddings (B, N, D) with gradients, ``frozen_clip`` the same detached.
    """

    def __init__(self, cfg: SelectorConfig, clip_dim: int, num_frames: int):
        super().__init__()
        self.cfg = cfg
        self.backbone: nn.Module | None = None
        if cfg.backbone in CNN_BACKBONES:
            self.backbone, feat_dim = build_cnn(cfg.backbone, cfg.backbone_weights)
            self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
            if cfg.freeze_backbone:
                self.backbone.requires_grad_(False)
                self.backbone.eval()
        elif cfg.backbone == "raw":
            feat_dim = cfg.input_size * cfg.input_size * self.channels
        else:
            feat_dim = clip_dim
        self.feat_dim = feat_dim
        self.temporal = TemporalContext(cfg.temporal, feat_dim, cfg.hidden_dim, num_frames)
        self.scorer = build_scorer(cfg.scorer, self.temporal.out_dim, cfg.mlp_hidden)

    @property
    def channels(self) -> int:
        """Channels of the cheap view this selector reads (1 grey for raw, else 3)."""
        return 1 if self.cfg.grayscale else 3

    @property
    def reads_clip_embeddings(self) -> bool:
        return self.cfg.backbone in CLIP_BACKBONES

    def train(self, mode: bool = True) -> FrameSelector:
        """Like nn.Module.train, but a frozen CNN backbone stays in eval mode (BatchNorm statistics kept)."""
        super().train(mode)
        if self.backbone is not None and self.cfg.freeze_backbone:
            self.backbone.eval()
        return self

    def frame_features(self, x: Tensor) -> Tensor:
        """Backbone only: views (B, N, s, s, C) or CLIP embeddings (B, N, D) -> (B, N, F)."""
        if self.reads_clip_embeddings:
            if x.dim() != 3:
                raise ValueError(
                    f"{self.cfg.backbone} selector expects CLIP embeddings (B, N, D), got {tuple(x.shape)}"
                )
            return x.detach() if self.cfg.backbone == "frozen_clip" else x
        if x.dim() != 5:
            raise ValueError(f"selector expects views (B, N, s, s, C), got {tuple(x.shape)}")
        b, n = x.shape[:2]
        pixels = x.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0  # (B*N, C, s, s) in [0, 1]
        if self.backbone is None:  # raw
            feats = pixels.flatten(1)  # (B*N, C*s*s)
            if feats.shape[1] != self.feat_dim:
                raise ValueError(
                    f"raw selector expects {self.channels}x{self.cfg.input_size}x{self.cfg.input_size} views, "
                    f"got {tuple(x.shape[2:])}; match selector.input_size"
                )
            return feats.view(b, n, -1)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)  # grey view into an RGB CNN
        pixels = (pixels - self.pixel_mean) / self.pixel_std
        return self.backbone(pixels).view(b, n, -1)  # (B, N, F)

    def head(self, feats: Tensor) -> Tensor:
        """Temporal context + scorer: (B, N, F) -> logits (B, N)."""
        return self.scorer(self.temporal(feats)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.frame_features(x))  # (B, N)
