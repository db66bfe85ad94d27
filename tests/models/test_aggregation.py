"""Aggregators (SPEC section 4) against independent float64 NumPy computations written from the SPEC."""

import numpy as np
import pytest
import torch

from adaclip.config import ModelConfig
from adaclip.models.aggregation import (
    MeanAggregator,
    MLPScoreAggregator,
    ReuseScoresAggregator,
    TransformerAggregator,
    build_aggregator,
)

TEMPERATURES = [0.05, 1.0, 7.0]


def np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def np_softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_quick_gelu(x):
    return x * (1.0 / (1.0 + np.exp(-1.702 * x)))


def np_pool(x, scores, temperature):
    w = np_softmax(scores / temperature)  # (B, K)
    return np_normalize(np.einsum("bk,bkd->bd", w, x))  # raw, unnormalised frames


def w64(t):
    return t.detach().double().numpy()


def frames(b=3, k=5, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, d, generator=g) * torch.rand(b, k, 1, generator=g) * 3  # uneven norms


@pytest.mark.parametrize("normalize_frames", [False, True])
def test_mean(normalize_frames):
    x = frames()
    got = MeanAggregator(normalize_frames)(x).numpy()
    xn = np_normalize(w64(x)) if normalize_frames else w64(x)
    np.testing.assert_allclose(got, np_normalize(xn.mean(axis=1)), atol=1e-6)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_mlp_score(temperature):
    torch.manual_seed(0)
    agg = MLPScoreAggregator(16, temperature)
    x = frames()
    lin = [m for m in agg.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(16, 32), (32, 16), (16, 1)]
    h = w64(x)
    h = np_quick_gelu(h @ w64(lin[0].weight).T + w64(lin[0].bias))
    h = np_quick_gelu(h @ w64(lin[1].weight).T + w64(lin[1].bias))
    s = (h @ w64(lin[2].weight).T + w64(lin[2].bias))[..., 0]  # (B, K)
    np.testing.assert_allclose(agg(x).detach().numpy(), np_pool(w64(x), s, temperature), atol=2e-6)


def np_layer_norm(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * w64(ln.weight) + w64(ln.bias)


def np_attention(x, attn):
    d, h = x.shape[-1], attn.num_heads
    qkv = x @ w64(attn.in_proj_weight).T + w64(attn.in_proj_bias)  # (B, K, 3D)
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(*x.shape[:2], h, d // h) for i in range(3))
    scores = np.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(d // h)
    out = np.einsum("bhqk,bkhc->bqhc", np_softmax(scores), v).reshape(x.shape)
    return out @ w64(attn.out_proj.weight).T + w64(attn.out_proj.bias)


def np_block(x, blk):
    """A pre-LN CLIP residual attention block with QuickGELU, from its definition."""
    x = x + np_attention(np_layer_norm(x, blk.ln_1), blk.attn)
    hidden = np_quick_gelu(np_layer_norm(x, blk.ln_2) @ w64(blk.mlp.c_fc.weight).T + w64(blk.mlp.c_fc.bias))
    return x + hidden @ w64(blk.mlp.c_proj.weight).T + w64(blk.mlp.c_proj.bias)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", [64, 128])
def test_transformer_aggregator(dim, temperature):
    torch.manual_seed(0)
    agg = TransformerAggregator(dim, temperature)
    with torch.no_grad():  # non-trivial norms and biases so that every term is exercised
        for p in agg.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = frames(d=dim)
    (blk,) = agg.transformer.resblocks
    assert blk.attn.num_heads == dim // 64
    ctx = np_block(w64(x), blk)
    s = (ctx @ w64(agg.score.weight).T + w64(agg.score.bias))[..., 0]
    np.testing.assert_allclose(agg(x).detach().numpy(), np_pool(w64(x), s, temperature), atol=5e-6)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_reuse_scores(temperature):
    x = frames()
    logits = torch.randn(3, 5) * 2
    got = ReuseScoresAggregator(temperature)(x, logits).numpy()
    np.testing.assert_allclose(got, np_pool(w64(x), w64(logits), temperature), atol=1e-6)
    with pytest.raises(ValueError, match="selector logits"):
        ReuseScoresAggregator(temperature)(x, None)


def test_temperature_limits():
    """Temperature >> 1 approaches mean pooling; << 1 approaches the best-scored single frame."""
    x = frames()
    logits = torch.randn(3, 5)
    hot = ReuseScoresAggregator(1e4)(x, logits).numpy()
    np.testing.assert_allclose(hot, np_normalize(w64(x).mean(1)), atol=1e-3)
    cold = ReuseScoresAggregator(1e-4)(x, logits).numpy()
    best = w64(x)[np.arange(3), logits.argmax(1).numpy()]
    np.testing.assert_allclose(cold, np_normalize(best), atol=1e-5)


def test_build_aggregator_follows_the_config():
    def cfg(agg, **kw):
        return ModelConfig(aggregation=agg, num_frames=8, top_k=4, **kw)

    assert isinstance(build_aggregator(cfg("mean", mean_normalize_frames=True), 16), MeanAggregator)
    assert build_aggregator(cfg("mean", mean_normalize_frames=True), 16).normalize_frames
    mlp = build_aggregator(cfg("mlp", frame_agg_temp=0.3), 16)
    assert isinstance(mlp, MLPScoreAggregator) and mlp.temperature == 0.3
    assert isinstance(build_aggregator(cfg("transformer"), 64), TransformerAggregator)
    assert isinstance(build_aggregator(cfg("reuse_scores"), 16), ReuseScoresAggregator)
    assert build_aggregator(cfg("qscore"), 16) is None
