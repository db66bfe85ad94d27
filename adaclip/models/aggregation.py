"""Query-independent frame aggregation (SPEC section 4): K frame embeddings -> one video vector.

Every aggregator maps frames (B, K, D) (+ the selector logits of the kept frames, (B, K) or None)
to a unit video vector (B, D). ``qscore`` is query-dependent: it has no aggregator here and is
computed at similarity time by ``adaclip.ops.query_scoring_similarity``.
"""

from __future__ import annotations

from open_clip.transformer import QuickGELU, Transformer
from torch import Tensor, nn

from adaclip import ops
from adaclip.config import ModelConfig
from adaclip.models.selector import num_heads


class MeanAggregator(nn.Module):
    """normalize(mean_k x_k), or normalize(mean_k normalize(x_k)) with ``normalize_frames`` (AdaCLIP)."""

    def __init__(self, normalize_frames: bool = False):
        super().__init__()
        self.normalize_frames = normalize_frames

    def forward(self, frames: Tensor, selector_logits: Tensor | None = None) -> Tensor:
        x = ops.normalize(frames.float()) if self.normalize_frames else frames.float()  # (B, K, D)
        return ops.normalize(x.mean(dim=1))  # (B, D)


def score_mlp(dim: int) -> nn.Sequential:
    """MLP-Score's scorer: Linear(D, 2D) -> QuickGELU -> Linear(2D, D) -> QuickGELU -> Linear(D, 1)."""
    return nn.Sequential(
        nn.Linear(dim, 2 * dim), QuickGELU(), nn.Linear(2 * dim, dim), QuickGELU(), nn.Linear(dim, 1)
    )


class MLPScoreAggregator(nn.Module):
    """MLP-Score (AdaCLIP's default): w = softmax(MLP(x_k) / temperature); video = normalize(sum_k w_k x_k)."""

    def __init__(self, dim: int, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.mlp = score_mlp(dim)

    def forward(self, frames: Tensor, selector_logits: Tensor | None = None) -> Tensor:
        scores = self.mlp(frames).squeeze(-1)  # (B, K)
        return ops.weighted_pool(frames, scores, self.temperature)  # (B, D)


class TransformerAggregator(nn.Module):
    """A 1-layer transformer over the K frames gives s_k = Linear(D, 1); weights pool the original x_k."""

    def __init__(self, dim: int, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.transformer = Transformer(dim, 1, num_heads(dim), act_layer=QuickGELU)
        self.score = nn.Linear(dim, 1)

    def forward(self, frames: Tensor, selector_logits: Tensor | None = None) -> Tensor:
        scores = self.score(self.transformer(frames)).squeeze(-1)  # (B, K)
        return ops.weighted_pool(frames, scores, self.temperature)  # (B, D)


class ReuseScoresAggregator(nn.Module):
    """w = softmax(selector logits of the kept frames / temperature): no parameters of its own."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, frames: Tensor, selector_logits: Tensor | None = None) -> Tensor:
        if selector_logits is None:
            raise ValueError("reuse_scores aggregation needs the selector logits of the kept frames (B, K)")
        return ops.weighted_pool(frames, selector_logits, self.temperature)  # (B, D)


def build_aggregator(cfg: ModelConfig, dim: int) -> nn.Module | None:
    """The aggregator named by ``cfg.aggregation``; None for the query-dependent ``qscore``."""
    if cfg.aggregation == "mean":
        return MeanAggregator(cfg.mean_normalize_frames)
    if cfg.aggregation == "mlp":
        return MLPScoreAggregator(dim, cfg.frame_agg_temp)
    if cfg.aggregation == "transformer":
        return TransformerAggregator(dim, cfg.frame_agg_temp)
    if cfg.aggregation == "reuse_scores":
        return ReuseScoresAggregator(cfg.frame_agg_temp)
    return None
