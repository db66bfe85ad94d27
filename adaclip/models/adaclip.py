"""AdaCLIP: learned frame selection + CLIP + frame aggregation for text-video retrieval (SPEC 2-5).

Inputs are the decoded uint8 clips: ``clip_frames`` (B, N, S, S, 3) RGB for CLIP and
``selector_frames`` (B, N, s, s, C) cheap views for the selector; both are normalised here, on
the model's device.

Training (``model.train()``): all N frames go through CLIP and the straight-through one-hots A of
Hard-Top-k pick K of them (A @ embeddings), so gradients reach the selector. Inference
(``model.eval()``): the selector runs on the cheap views first and only the K chosen frames are
gathered and encoded by CLIP: the image-encoder saving is real. The ``clip`` / ``frozen_clip``
selector backbones score frames from their CLIP embeddings, so they encode all N frames by design.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaclip import ops
from adaclip.config import ModelConfig
from adaclip.errors import ConfigError
from adaclip.models.aggregation import build_aggregator
from adaclip.models.clip import ClipBundle, load_clip, text_tower
from adaclip.models.headers import (
    SimilarityHeader,
    WordAggregator,
    end_of_text_embedding,
    pools_at_end_of_text,
    text_token_features,
)
from adaclip.models.selector import FrameSelector

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class Selection:
    """Which K of N frames each video keeps."""

    logits: Tensor | None  # (B, N) selector logits; None without a learned selector
    onehots: Tensor  # (B, K, N) one-hots (straight-through gradients when training)
    indices: Tensor  # (B, K) frame indices, in selection order


@dataclass
class VideoEmbedding:
    """A batch of encoded videos: the video vector (None for qscore) and the kept frame embeddings."""

    video: Tensor | None  # (B, D) unit vectors; None for query-dependent qscore
    frames: Tensor  # (B, K, D) kept frame embeddings (after the similarity header)
    indices: Tensor  # (B, K) which of the N sampled frames were kept
    logits: Tensor | None  # (B, N) selector logits, or None


def uniform_indices(num_frames: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """K evenly spaced of N frames, floor(i * N / K) (SPEC section 1 `uniform`): -> (K,)."""
    return torch.div(torch.arange(k, device=device) * num_frames, k, rounding_mode="floor")


def gather_frames(frames: Tensor, indices: Tensor) -> Tensor:
    """frames (B, N, ...) and indices (B, K) -> (B, K, ...), on frames' device."""
    rows = torch.arange(frames.shape[0], device=frames.device).unsqueeze(1)  # (B, 1)
    return frames[rows, indices.to(frames.device)]


def _act_layer(clip_model: nn.Module) -> type[nn.Module]:
    """The MLP activation of CLIP's text blocks (QuickGELU for OpenAI weights), so copied layers behave."""
    try:
        return type(text_tower(clip_model).transformer.resblocks[0].mlp.gelu)
    except (AttributeError, ConfigError):
        return nn.GELU


NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)


class AdaCLIP(nn.Module):
    """The retrieval model. Build it with ``AdaCLIP.from_config(cfg, device)``."""

    encode_chunk_size: int = 256  # frames per CLIP image-encoder call (bounds activation memory)

    def __init__(self, cfg: ModelConfig, bundle: ClipBundle):
        super().__init__()
        self.cfg = cfg
        self.clip = bundle.model
        self.tokenizer = bundle.tokenizer
        self.image_size = bundle.image_size
        self.embed_dim = dim = bundle.embed_dim
        self.context_length = bundle.context_length
        self.register_buffer("clip_mean", torch.tensor(bundle.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(bundle.std).view(1, 3, 1, 1), persistent=False)
        learned = cfg.selection == "learned"
        self.selector = FrameSelector(cfg.selector, dim, cfg.num_frames) if learned else None
        self.header: SimilarityHeader | None = None
        if cfg.sim_header != "none":
            self.header = SimilarityHeader(cfg.sim_header, dim, cfg.num_frames, _act_layer(self.clip))
            if cfg.sim_header == "seqTransf":
                self.header.init_from_clip_text(self.clip)
        self.aggregator = build_aggregator(cfg, dim)
        self._pools_at_end_of_text = pools_at_end_of_text(self.clip)
        self.word_agg: WordAggregator | None = None
        if cfg.word_agg != "none":
            text_tower(self.clip)  # fails early for text towers without per-token outputs
            self.word_agg = WordAggregator(cfg.word_agg, dim, cfg.word_agg_temp)

    @classmethod
    def from_config(cls, cfg: ModelConfig, device: str | torch.device = "cpu") -> AdaCLIP:
        """Load CLIP as ``cfg.clip`` says and build the new modules around it, on ``device``."""
        return cls(cfg, load_clip(cfg.clip, device)).to(device)

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    @property
    def model_version(self) -> str:
        """Short hash of the model config and every weight and buffer: it names the index collection
        and enters every point id, so a retrained model never mixes its vectors with the old one's.
        Cached until a tensor changes in place (an optimiser step, `load_state_dict`)."""
        state = self.state_dict()
        stamp = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
        if getattr(self, "_version_cache", (None,))[0] != stamp:
            digest = hashlib.sha256(json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True).encode())
            for name, t in sorted(state.items()):
                digest.update(name.encode())
                digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
            self._version_cache = (stamp, digest.hexdigest()[:12])
        return self._version_cache[1]

    # ---- text ----------------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Captions -> token ids (T, L) with CLIP's tokenizer (L = context_length, at most CLIP's)."""
        length = context_length or self.context_length
        if length > self.context_length:
            raise ConfigError(
                f"context_length={length} exceeds the CLIP text tower's {self.context_length} tokens"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, context_length=length)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids (T, L) -> text embeddings (T, D), unnormalised.

        L may be shorter than CLIP's context (AdaCLIP's max_txt_len). Under the causal mask the
        end-of-text token's output depends on the tokens up to it only, so a tower that pools it is
        run over the L positions (ViT-B-32 with L=32: 32 of its 77); other towers get the ids
        zero-padded to their context.
        """
        tokens = tokens.to(self.device)
        if self.word_agg is None:
            if tokens.shape[1] < self.context_length:
                if self._pools_at_end_of_text:
                    return end_of_text_embedding(self.clip, tokens)  # (T, D)
                tokens = F.pad(tokens, (0, self.context_length - tokens.shape[1]))  # (T, context)
            return self.clip.encode_text(tokens)  # (T, D)
        feats, mask = text_token_features(self.clip, tokens)  # (T, L, D), (T, L)
        return self.word_agg(feats, mask)  # (T, D)

    # ---- frames ----------------------------------------------------------------------------

    def _pixels(self, frames: Tensor) -> Tensor:
        """uint8 RGB (n, S, S, 3) -> CLIP-normalised (n, 3, S', S') on the model's device."""
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, S, S)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        x = (x - self.clip_mean) / self.clip_std
        return x.to(next(self.clip.visual.parameters()).dtype)  # fp16/bf16 CLIP weights read their dtype

    def encode_frames(self, clip_frames: Tensor) -> Tensor:
        """uint8 frames (B, F, S, S, 3) -> CLIP image embeddings (B, F, D), encoded in chunks."""
        if clip_frames.dim() != 5 or clip_frames.shape[-1] != 3:
            raise ValueError(f"clip_frames must be (B, F, S, S, 3) RGB, got {tuple(clip_frames.shape)}")
        b, f = clip_frames.shape[:2]
        flat = clip_frames.flatten(0, 1)  # (B*F, S, S, 3)
        outs = [self.clip.encode_image(self._pixels(chunk)) for chunk in flat.split(self.encode_chunk_size)]
        return torch.cat(outs).view(b, f, -1)  # (B, F, D)

    def _resolve_k(self, k: int | None, num_frames: int) -> int:
        if self.cfg.selection == "all":
            return num_frames
        k = self.cfg.top_k if k is None else k
        if not 1 <= k <= num_frames:
            raise ValueError(f"k={k} must be between 1 and the N={num_frames} sampled frames")
        return k

    def _select(
        self,
        b: int,
        n: int,
        k: int,
        tau: float,
        training: bool,
        views: Tensor | None,
        clip_emb: Tensor | None,
    ) -> Selection:
        if self.selector is None:
            idx = (
                uniform_indices(n, k, self.device)
                if self.cfg.selection == "uniform"
                else torch.arange(n, device=self.device)
            )
            idx = idx.unsqueeze(0).expand(b, -1)  # (B, K)
            return Selection(None, F.one_hot(idx, n).float(), idx)
        if self.selector.reads_clip_embeddings:
            if clip_emb is None:
                raise ValueError(f"the {self.cfg.selector.backbone} selector needs the CLIP frame embeddings")
            inputs = clip_emb  # (B, N, D)
        else:
            if views is None:
                raise ValueError("the learned selector needs selector_frames (B, N, s, s, C)")
            inputs = views.to(self.device, non_blocking=True)  # (B, N, s, s, C)
        logits = self.selector(inputs)  # (B, N)
        onehots = ops.hard_topk(logits, k, tau, training=training)  # (B, K, N)
        return Selection(logits, onehots, onehots.detach().argmax(dim=-1))

    def select(
        self,
        selector_frames: Tensor | None,
        k: int | None = None,
        tau: float = 1.0,
        training: bool | None = None,
        clip_embeddings: Tensor | None = None,
    ) -> Selection:
        """Pick K of N frames: learned (selector + Hard-Top-k), uniform (evenly spaced) or all.

        ``clip_embeddings`` (B, N, D) feed the clip / frozen_clip backbones; ``training`` defaults to
        ``self.training`` (stochastic straight-through picks) and False gives the top-K logits.
        """
        ref = selector_frames if selector_frames is not None else clip_embeddings
        if ref is None:
            raise ValueError("select needs selector_frames (B, N, s, s, C) or clip_embeddings (B, N, D)")
        b, n = ref.shape[:2]
        training = self.training if training is None else training
        return self._select(b, n, self._resolve_k(k, n), tau, training, selector_frames, clip_embeddings)

    def encode_video(
        self,
        clip_frames: Tensor,
        selector_frames: Tensor | None = None,
        *,
        k: int | None = None,
        tau: float = 1.0,
    ) -> VideoEmbedding:
        """Select K of the N frames, encode them with CLIP and aggregate (see the module docstring)."""
        b, n = clip_frames.shape[:2]
        k = self._resolve_k(k, n)
        needs_all = self.selector is not None and (self.training or self.selector.reads_clip_embeddings)
        if needs_all:
            emb_all = self.encode_frames(clip_frames)  # (B, N, D)
            sel = self._select(b, n, k, tau, self.training, selector_frames, emb_all)
            if self.training:
                frames = sel.onehots.to(emb_all.dtype) @ emb_all  # (B, K, N) @ (B, N, D) -> (B, K, D)
            else:
                frames = gather_frames(emb_all, sel.indices)  # (B, K, D)
        else:
            sel = self._select(b, n, k, tau, self.training, selector_frames, None)
            frames = self.encode_frames(gather_frames(clip_frames, sel.indices))  # only K frames: (B, K, D)
        if self.header is not None:
            frames = self.header(frames, sel.indices)  # (B, K, D)
        kept_logits = None if sel.logits is None else sel.logits.gather(1, sel.indices)  # (B, K)
        video = None if self.aggregator is None else self.aggregator(frames, kept_logits)  # (B, D)
        return VideoEmbedding(video, frames, sel.indices, sel.logits)

    # ---- similarity, loss, optimisation ------------------------------------------------------

    def similarity(self, text: Tensor, video: VideoEmbedding) -> Tensor:
        """Cosine similarity (T, V) of captions (T, D) and videos, in float32 even under autocast;
        query scoring over the kept frames for qscore."""
        with torch.autocast(text.device.type, enabled=False):
            if video.video is None:
                return ops.query_scoring_similarity(
                    text, video.frames, self.cfg.qscore_temperature, self.cfg.qscore_variant
                )  # (T, V)
            dtype = torch.float64 if torch.float64 in (text.dtype, video.video.dtype) else torch.float32
            return ops.normalize(text.to(dtype)) @ ops.normalize(video.video.to(dtype)).T  # (T, V)

    def logits(self, text: Tensor, video: VideoEmbedding, logit_scale: Tensor | None = None) -> Tensor:
        """exp(logit_scale) * cosine: (T, V); `logit_scale` (default: CLIP's) lets DDP training
        pass it with its gradient scaled."""
        scale = self.clip.logit_scale if logit_scale is None else logit_scale
        return scale.exp().float() * self.similarity(text, video)

    def loss(self, text_emb: Tensor, video_emb: VideoEmbedding) -> Tensor:
        """Symmetric contrastive loss of a (B, B) batch, caption i paired with video i."""
        return ops.symmetric_contrastive_loss(self.logits(text_emb, video_emb))

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep exp(logit_scale) <= 100; call after every optimiser step."""
        self.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    def param_groups(self, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups (SPEC section 5): CLIP's weights at lr * coef_lr, new modules at lr; no weight
        decay on biases and normalisation layers only (embeddings and logit_scale decay, as in SPEC)."""
        norms = {
            id(p) for m in self.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)
        }
        groups: dict[tuple[bool, bool], list[tuple[str, nn.Parameter]]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_clip = name.startswith("clip.")
            no_decay = name.endswith(".bias") or id(p) in norms
            groups.setdefault((is_clip, no_decay), []).append((name, p))
        out = []
        for (is_clip, no_decay), named in sorted(groups.items()):
            out.append(
                {
                    "params": [p for _, p in named],
                    "param_names": [n for n, _ in named],
                    "lr": lr * coef_lr if is_clip else lr,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "name": f"{'clip' if is_clip else 'new'}_{'no_decay' if no_decay else 'decay'}",
                }
            )
        return out
