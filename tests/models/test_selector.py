"""FrameSelector (SPEC section 2): every backbone x temporal x scorer, gradients, frozen backbones, bilstm."""

import pytest
import torch
import torchvision
from torch import nn

from adaclip.config import SelectorConfig
from adaclip.errors import ConfigError
from adaclip.models.selector import CNN_BACKBONES, FrameSelector

B, N, CLIP_DIM = 2, 4, 16


def make_selector(backbone: str, temporal: str = "transformer", scorer: str = "mlp", **kw) -> FrameSelector:
    size = 16 if backbone == "raw" else 32
    cfg = SelectorConfig(
        backbone=backbone,
        temporal=temporal,
        scorer=scorer,
        input_size=size,
        hidden_dim=kw.pop("hidden_dim", 64),
        mlp_hidden=8,
        freeze_backbone=kw.pop("freeze_backbone", False),
        **kw,
    )
    return FrameSelector(cfg, CLIP_DIM, N)


def selector_input(sel: FrameSelector) -> torch.Tensor:
    if sel.reads_clip_embeddings:
        return torch.randn(B, N, CLIP_DIM, requires_grad=True)
    s = sel.cfg.input_size
    return torch.randint(0, 256, (B, N, s, s, sel.channels), dtype=torch.uint8)


@pytest.mark.parametrize("scorer", ["mlp", "linear"])
@pytest.mark.parametrize("temporal", ["none", "transformer", "lstm", "bilstm"])
@pytest.mark.parametrize(
    "backbone", ["raw", "mobilenet_v2", "mobilenet_v3_large", "resnet50", "clip", "frozen_clip"]
)
def test_logits_shape_and_gradients(backbone, temporal, scorer):
    torch.manual_seed(0)
    frozen = backbone in CNN_BACKBONES and scorer == "linear"  # both frozen and trainable CNNs are covered
    sel = make_selector(backbone, temporal, scorer, freeze_backbone=frozen).train()
    x = selector_input(sel)
    logits = sel(x)
    assert logits.shape == (B, N)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert sel.scorer[0].weight.grad is not None and sel.scorer[0].weight.grad.abs().sum() > 0
    if temporal == "none":  # AdaCLIP's --no_rnn: the scorer reads the backbone features directly
        assert not list(sel.temporal.parameters()) and sel.scorer[0].in_features == sel.feat_dim
    else:
        first_temporal = next(sel.temporal.parameters())
        assert first_temporal.grad is not None and first_temporal.grad.abs().sum() > 0
    if backbone in CNN_BACKBONES:
        grads = [p.grad for p in sel.backbone.parameters()]
        if frozen:
            assert all(g is None for g in grads)
            assert not any(p.requires_grad for p in sel.backbone.parameters())
            assert not sel.backbone.training  # BatchNorm statistics stay put while the rest trains
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
            assert sel.backbone.training
    if backbone == "clip":
        assert x.grad is not None and x.grad.abs().sum() > 0
    if backbone == "frozen_clip":
        assert x.grad is None


def test_frozen_backbone_stays_in_eval_mode_and_unchanged():
    sel = make_selector("mobilenet_v2", "none", "mlp", freeze_backbone=True)
    before = {k: v.clone() for k, v in sel.backbone.state_dict().items()}
    sel.train()
    sel(selector_input(sel))  # a BatchNorm in train mode would update running stats here
    for key, value in sel.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bilstm_averages_the_two_directions():
    torch.manual_seed(0)
    sel = make_selector("raw", "bilstm", "linear", hidden_dim=6)
    x = selector_input(sel)
    feats = sel.frame_features(x)  # (B, N, F)
    rnn = sel.temporal.rnn
    fwd = nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True)
    bwd = nn.LSTM(rnn.input_size, rnn.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(fwd, name).copy_(getattr(rnn, name))
            getattr(bwd, name).copy_(getattr(rnn, name + "_reverse"))
        forward_out, _ = fwd(feats)
        backward_out, _ = bwd(feats.flip(1))
        expected = (forward_out + backward_out.flip(1)) / 2  # (B, N, H)
        got = sel.temporal(feats)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(sel(x), sel.scorer(expected).squeeze(-1), atol=1e-6, rtol=1e-5)


def test_transformer_heads_and_position_limit():
    sel = make_selector("raw", "transformer", hidden_dim=128)
    assert sel.temporal.transformer.resblocks[0].attn.num_heads == 2  # hidden_dim // 64
    small = make_selector("raw", "transformer", hidden_dim=32)
    assert small.temporal.transformer.resblocks[0].attn.num_heads == 1  # at least one
    too_many = torch.zeros(1, N + 1, 16, 16, 1, dtype=torch.uint8)
    with pytest.raises(ValueError, match="position embeddings"):
        sel(too_many)


def test_raw_view_size_mismatch_is_explained():
    sel = make_selector("raw", "none")
    with pytest.raises(ValueError, match="input_size"):
        sel(torch.zeros(1, N, 8, 8, 1, dtype=torch.uint8))


def test_raw_features_are_scaled_grey_pixels():
    sel = make_selector("raw", "none")
    x = torch.full((1, N, 16, 16, 1), 255, dtype=torch.uint8)
    feats = sel.frame_features(x)
    assert feats.shape == (1, N, 256)
    assert torch.all(feats == 1.0)


def test_backbone_weights_from_local_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v3_large()
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    sel = make_selector("mobilenet_v3_large", "none", backbone_weights=str(path))
    torch.testing.assert_close(sel.backbone.features[0][0].weight, reference.features[0][0].weight)
    torch.testing.assert_close(sel.backbone.classifier[0].weight, reference.classifier[0].weight)
    assert sel.feat_dim == 1280


def test_missing_backbone_weights_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="backbone_weights"):
        make_selector("resnet50", "none", backbone_weights=str(tmp_path / "nope.pth"))
