"""Similarity headers (seqTransf, transformer) and word aggregation on the tiny CLIP."""

import pytest
import torch
from torch import nn

from adaclip.config import ClipConfig, ModelConfig
from adaclip.models import AdaCLIP, SimilarityHeader, WordAggregator, load_clip, text_token_features
from adaclip.models.headers import end_of_text_embedding, pools_at_end_of_text


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip(ClipConfig(name="adaclip-tiny"))


@pytest.mark.parametrize("kind,layers", [("seqTransf", 4), ("transformer", 1)])
def test_header_keeps_shapes_and_is_residual(kind, layers):
    torch.manual_seed(0)
    header = SimilarityHeader(kind, 64, num_frames=8)
    assert len(header.transformer.resblocks) == layers
    x = torch.randn(2, 3, 64)
    positions = torch.tensor([[0, 4, 7], [1, 2, 3]])
    out = header(x, positions)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    with torch.no_grad():  # zero every block's output projections: only the residual paths remain
        for blk in header.transformer.resblocks:
            for lin in (blk.attn.out_proj, blk.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        pos = header.position_embeddings.weight[positions]
    # CLIP4Clip's seqTransf: transformer(x + pos) + x, the blocks being residual themselves
    torch.testing.assert_close(header(x, positions), x + (x + pos))


def test_header_uses_frame_positions():
    torch.manual_seed(0)
    header = SimilarityHeader("transformer", 64, num_frames=8)
    x = torch.randn(1, 3, 64)
    a = header(x, torch.tensor([[0, 1, 2]]))
    b = header(x, torch.tensor([[5, 6, 7]]))
    assert not torch.allclose(a, b)


def test_seqtransf_init_copies_clip_text_layers(tiny_clip):
    model = tiny_clip.model
    header = SimilarityHeader("seqTransf", 64, num_frames=8)
    copied = header.init_from_clip_text(model)
    assert copied == len(model.transformer.resblocks) == 2  # the tiny CLIP has 2 text layers (of 4)
    for mine, theirs in zip(header.transformer.resblocks, model.transformer.resblocks, strict=False):
        for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(header.position_embeddings.weight, model.positional_embedding[:8])
    other = SimilarityHeader("seqTransf", 32, num_frames=8)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert other.init_from_clip_text(model) == 0  # widths differ: nothing copied
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


def test_adaclip_initialises_seqtransf_from_clip():
    cfg = ModelConfig(
        clip=ClipConfig(name="adaclip-tiny"),
        selection="uniform",
        num_frames=8,
        top_k=4,
        sim_header="seqTransf",
    )
    model = AdaCLIP.from_config(cfg)
    first = model.header.transformer.resblocks[0].attn.in_proj_weight
    assert torch.equal(first, model.clip.transformer.resblocks[0].attn.in_proj_weight)


def test_token_features_match_clip_pooled_text(tiny_clip):
    tokens = tiny_clip.tokenizer(["a dog runs on the beach", "hi"])
    feats, mask = text_token_features(tiny_clip.model, tokens)
    assert feats.shape == (2, 32, 64)
    eot = tokens.argmax(-1)
    assert mask.sum(1).tolist() == (eot + 1).tolist()
    pooled = tiny_clip.model.encode_text(tokens)
    torch.testing.assert_close(feats[torch.arange(2), eot], pooled, atol=1e-5, rtol=1e-5)


def test_short_captions_run_over_their_own_positions_only():
    """A tower pooling its end-of-text token runs a caption tokenised to L < context over L
    positions, with the embedding open_clip gives the caption zero-padded to the whole context
    (captions shorter than L, and longer ones cut at L)."""
    torch.manual_seed(0)
    model = AdaCLIP.from_config(ModelConfig(clip=ClipConfig(name="adaclip-tiny"))).eval()
    assert pools_at_end_of_text(model.clip) and model.context_length == 32
    captions = ["a dog", "a dog runs on the beach at night with a red ball " * 3, ""]
    tokens = model.tokenize(captions, 12)  # (3, 12)
    with torch.no_grad():
        got = model.encode_text(tokens)
        want = model.clip.encode_text(torch.nn.functional.pad(tokens, (0, 20)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_custom_text_tower_also_runs_over_the_caption_positions_only():
    """open_clip's TextTransformer (CustomTextCLIP's `text`) hands out its whole context's causal
    mask: the short path cuts it to L and gives the padded embedding."""
    from open_clip.transformer import TextTransformer

    torch.manual_seed(0)
    model = nn.Module()
    model.text = TextTransformer(
        context_length=16, vocab_size=100, width=32, heads=2, layers=1, output_dim=16
    )
    assert pools_at_end_of_text(model)
    tokens = torch.randint(1, 90, (3, 8))
    for row, end in enumerate((2, 5, 7)):  # end-of-text (the largest id) at 2, 5 and 7
        tokens[row, end], tokens[row, end + 1 :] = 99, 0
    with torch.no_grad():
        got = end_of_text_embedding(model, tokens)
        want = model.text(torch.nn.functional.pad(tokens, (0, 8)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_word_aggregation_ignores_padding(kind, tiny_clip):
    torch.manual_seed(0)
    agg = WordAggregator(kind, 64, temperature=0.5)
    tokens = tiny_clip.tokenizer(["a dog runs", "a red car"])
    feats, mask = text_token_features(tiny_clip.model, tokens)
    out = agg(feats, mask)
    assert out.shape == (2, 64) and torch.isfinite(out).all()
    noisy = torch.where(mask.unsqueeze(-1), feats, torch.randn_like(feats) * 100)
    torch.testing.assert_close(agg(noisy, mask), out)  # pads change neither weights nor the sum
    if kind == "mlp":
        s = agg.mlp(feats).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s / 0.5, dim=-1)
        torch.testing.assert_close(out, (w.unsqueeze(-1) * feats).sum(1))


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_adaclip_encode_text_with_word_agg(kind):
    cfg = ModelConfig(
        clip=ClipConfig(name="adaclip-tiny"), selection="uniform", num_frames=8, top_k=4, word_agg=kind
    )
    model = AdaCLIP.from_config(cfg)
    tokens = model.tokenize(["a dog runs", "a cat sleeps", "rain"])
    text = model.encode_text(tokens)
    assert text.shape == (3, 64)
    text.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.word_agg.parameters())
    assert model.clip.token_embedding.weight.grad is not None
