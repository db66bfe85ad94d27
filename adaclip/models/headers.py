"""Optional heads around CLIP (SPEC section 4): a temporal similarity header on the frame side and
word aggregation on the text side.

- ``SimilarityHeader``: seqTransf (4 layers) or transformer (1 layer) over the kept frames, with
  learned frame position embeddings and a residual to the input (CLIP4Clip's seqTransf).
- ``WordAggregator``: weights over a caption's token embeddings (pads masked) whose weighted sum
  replaces CLIP's end-of-text embedding.
"""

from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU, Transformer
from torch import Tensor, nn

from adaclip.errors import ConfigError
from adaclip.models.aggregation import score_mlp
from adaclip.models.clip import text_tower
from adaclip.models.selector import num_heads

HEADER_LAYERS = {"seqTransf": 4, "transformer": 1}


class SimilarityHeader(nn.Module):
    """frames (B, K, D) + their frame positions (B, K) in [0, N) -> frames (B, K, D), residual to the input."""

    def __init__(self, kind: str, dim: int, num_frames: int, act_layer: type[nn.Module] = QuickGELU):
        super().__init__()
        self.kind = kind
        self.position_embeddings = nn.Embedding(num_frames, dim)
        self.transformer = Transformer(dim, HEADER_LAYERS[kind], num_heads(dim), act_layer=act_layer)

    def forward(self, frames: Tensor, positions: Tensor | None = None) -> Tensor:
        if positions is None:
            positions = torch.arange(frames.shape[1], device=frames.device).expand(frames.shape[0], -1)
        x = frames + self.position_embeddings(positions).to(frames.dtype)  # (B, K, D)
        return frames + self.transformer(x)  # (B, K, D)

    @torch.no_grad()
    def init_from_clip_text(self, clip_model: nn.Module) -> int:
        """Copy the first resblocks (up to this header's depth) and the first N positional embeddings of
        CLIP's text transformer when widths match; returns how many layers were copied (0 if none)."""
        tower = text_tower(clip_model)
        if tower.transformer.width != self.transformer.width:
            return 0
        n_pos = min(self.position_embeddings.num_embeddings, tower.positional_embedding.shape[0])
        self.position_embeddings.weight[:n_pos].copy_(tower.positional_embedding[:n_pos])
        copied = 0
        for mine, theirs in zip(self.transformer.resblocks, tower.transformer.resblocks, strict=False):
            mine.load_state_dict(theirs.state_dict())
            copied += 1
        return copied


class WordAggregator(nn.Module):
    """Caption tokens (T, L, D) + real-token mask (T, L) -> one text vector (T, D) (unnormalised).

    ``mlp``: s = MLP-Score's MLP(token); ``transformer``: 1-layer transformer then Linear(D, 1).
    Weights softmax(s / temperature) over the real tokens (start, words, end) only.
    """

    def __init__(self, kind: str, dim: int, temperature: float = 1.0):
        super().__init__()
        self.kind = kind
        self.temperature = temperature
        if kind == "mlp":
            self.mlp = score_mlp(dim)
        else:
            self.transformer = Transformer(dim, 1, num_heads(dim), act_layer=QuickGELU)
            self.score = nn.Linear(dim, 1)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "mlp":
            scores = self.mlp(tokens).squeeze(-1)  # (T, L)
        else:
            pad = torch.zeros(mask.shape, dtype=tokens.dtype, device=tokens.device).masked_fill(
                ~mask, float("-inf")
            )
            attn = pad.unsqueeze(1).expand(-1, mask.shape[1], -1)  # (T, L, L) additive key mask
            attn = attn.repeat_interleave(self.transformer.resblocks[0].attn.num_heads, dim=0)
            scores = self.score(self.transformer(tokens, attn_mask=attn)).squeeze(-1)  # (T, L)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores / self.temperature, dim=-1)  # (T, L)
        return torch.einsum("tl,tld->td", weights, tokens.float())  # (T, D)


def text_token_features(clip_model: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token outputs of open_clip's text tower projected to D: (T, L) ids -> ((T, L, D), mask (T, L)).

    Re-runs the tower's own pieces (token/positional embedding, causal transformer, ln_final,
    text_projection); the mask keeps tokens up to and including the end-of-text token.
    """
    tower = text_tower(clip_model)
    cast_dtype = tower.transformer.get_cast_dtype()
    seq_len = tokens.shape[1]
    if getattr(tower, "cls_emb", None) is None and hasattr(tower, "_embeds"):
        x, attn_mask = tower._embeds(tokens)  # TextTransformer: (T, L, W), its causal/pad mask
        if attn_mask is not None and attn_mask.dim() == 2:  # the whole context's causal mask
            attn_mask = attn_mask[:seq_len, :seq_len]
    else:
        x = tower.token_embedding(tokens).to(cast_dtype)  # (T, L, W)
        x = x + tower.positional_embedding[:seq_len].to(cast_dtype)
        attn_mask = tower.attn_mask
        if attn_mask is not None:
            attn_mask = attn_mask[:seq_len, :seq_len]
    x = tower.ln_final(tower.transformer(x, attn_mask=attn_mask))  # (T, L, W)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj  # (T, L, D)
    eot = _end_positions(tower, tokens)  # (T,)
    mask = torch.arange(seq_len, device=tokens.device).unsqueeze(0) <= eot.unsqueeze(1)  # (T, L)
    return x, mask


def pools_at_end_of_text(clip_model: nn.Module) -> bool:
    """Whether the tower's text embedding is its end-of-text token's output under a causal mask
    (open_clip's CLIP text towers): then a caption of L tokens needs only those L positions, and
    padding to the tower's whole context computes nothing that changes it."""
    try:
        tower = text_tower(clip_model)
    except ConfigError:
        return False
    causal = getattr(tower, "attn_mask", None) is not None
    return causal and getattr(tower, "cls_emb", None) is None and _pool_type(tower) in ("argmax", "eos")


def end_of_text_embedding(clip_model: nn.Module, tokens: Tensor) -> Tensor:
    """The tower's pooled text embedding (T, D) computed over the given L positions (for a tower
    that `pools_at_end_of_text`): the end-of-text token's projected output."""
    feats, _ = text_token_features(clip_model, tokens)  # (T, L, D)
    eot = _end_positions(text_tower(clip_model), tokens)  # (T,)
    return feats.gather(1, eot[:, None, None].expand(-1, 1, feats.shape[-1])).squeeze(1)  # (T, D)


def _pool_type(tower: nn.Module) -> str:
    return getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", "argmax")


def _end_positions(tower: nn.Module, tokens: Tensor) -> Tensor:
    """Index of each caption's end-of-text token, as the tower's own pooling finds it."""
    pool = _pool_type(tower)
    eos_id = getattr(tower, "text_eos_id", None) or getattr(tower, "eos_id", None)
    if pool == "eos" and eos_id is not None:
        return (tokens == eos_id).int().argmax(dim=-1)
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    return torch.full(tokens.shape[:1], tokens.shape[1] - 1, device=tokens.device)
