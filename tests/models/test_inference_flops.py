"""Inference encodes only the K selected frames (measured with FlopCounterMode), and GFLOPs per video."""

import open_clip
import pytest
import torch

from adaclip.config import ModelConfig
from adaclip.models import (
    AdaCLIP,
    aggregation_gflops,
    gflops_per_video,
    image_encoder_gflops,
    measure_encode_video_gflops,
    selector_gflops,
)
from adaclip.models.flops import count_flops

N = 16


def tiny_model(**kw) -> AdaCLIP:
    selector = {
        "backbone": "raw",
        "freeze_backbone": False,
        "input_size": 16,
        "hidden_dim": 64,
        "mlp_hidden": 32,
    }
    selector.update(kw.pop("selector", {}))
    tree = {"clip": {"name": "adaclip-tiny"}, "selector": selector, "num_frames": N, "top_k": 4}
    tree.update(kw)
    torch.manual_seed(0)
    return AdaCLIP.from_config(ModelConfig.model_validate(tree)).eval()


def frames(b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clip_frames = torch.randint(0, 256, (b, N, 32, 32, 3), dtype=torch.uint8, generator=g)
    selector_frames = torch.randint(0, 256, (b, N, 16, 16, 1), dtype=torch.uint8, generator=g)
    return clip_frames, selector_frames


def test_inference_encodes_only_the_k_selected_frames():
    model = tiny_model()
    clip_frames, selector_frames = frames()
    k4 = measure_encode_video_gflops(model, clip_frames, selector_frames, k=4)
    k16 = measure_encode_video_gflops(model, clip_frames, selector_frames, k=16)
    assert k4["image_encoder"] > 0
    assert k4["image_encoder"] / k16["image_encoder"] == pytest.approx(4 / 16, rel=1e-9)
    assert k4["image_encoder"] == pytest.approx(2 * 4 * image_encoder_gflops(model), rel=1e-9)  # B=2 videos
    assert k4["total"] < k16["total"]
    assert not model.training  # measuring leaves the mode as it was
    with torch.no_grad():
        video = model.encode_video(clip_frames, selector_frames, k=4)
        logits = model.selector(selector_frames)
    assert torch.equal(video.indices, logits.topk(4).indices)  # top-K by logit, highest first
    torch.testing.assert_close(video.logits, logits)


def test_training_mode_encodes_all_frames():
    model = tiny_model().train()
    clip_frames, selector_frames = frames(b=1)
    calls = []
    handle = model.clip.visual.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    model.encode_video(clip_frames, selector_frames, tau=1.0)
    model.eval()
    with torch.no_grad():
        model.encode_video(clip_frames, selector_frames)
    handle.remove()
    assert calls == [N, 4]  # straight-through needs all N in training; inference encodes K


def test_gflops_per_video_matches_a_measured_call():
    model = tiny_model()
    clip_frames, selector_frames = frames(b=1)
    budget = gflops_per_video(model)
    measured = measure_encode_video_gflops(model, clip_frames, selector_frames)
    assert budget["frames_encoded"] == 4
    assert budget["image_encoder"] == pytest.approx(measured["image_encoder"], rel=1e-9)
    assert budget["total"] == pytest.approx(measured["total"], rel=1e-6)
    assert budget["total"] == pytest.approx(
        budget["image_encoder"] + budget["selector"] + budget["aggregation"]
    )
    everything = gflops_per_video(model, k=16)
    assert everything["image_encoder"] == pytest.approx(4 * budget["image_encoder"])


def test_selector_gflops_counts_lstm_cells():
    hidden, mlp_hidden, pixels = 16, 8, 16 * 16
    model = tiny_model(selector={"temporal": "lstm", "hidden_dim": hidden, "mlp_hidden": mlp_hidden})
    macs = N * (4 * hidden * (pixels + hidden) + hidden * mlp_hidden + mlp_hidden)  # LSTM + scorer, per video
    assert selector_gflops(model) == pytest.approx(macs / 1e9, rel=1e-9)


def test_clip_backbone_encodes_all_frames_by_design():
    model = tiny_model(selector={"backbone": "clip", "temporal": "none", "hidden_dim": 16})
    clip_frames, _ = frames(b=1)
    measured = measure_encode_video_gflops(model, clip_frames, None)
    assert measured["image_encoder"] == pytest.approx(N * image_encoder_gflops(model), rel=1e-9)
    assert gflops_per_video(model)["frames_encoded"] == N


def test_uniform_selection_has_no_selector_cost():
    model = tiny_model(selection="uniform")
    budget = gflops_per_video(model)
    assert budget["selector"] == 0.0
    assert budget["image_encoder"] == pytest.approx(4 * image_encoder_gflops(model))


def transformer_macs(tokens: int, width: int, layers: int = 1) -> int:
    """open_clip residual blocks, counted by hand: Q/K/V and output projections (4 L D^2), Q K^T and
    attention x V (2 L^2 D), the 4x MLP (8 L D^2)."""
    return layers * (12 * tokens * width**2 + 2 * tokens**2 * width)


@pytest.mark.parametrize(
    ("name", "reported"),
    [("ViT-B-32", 4.4), ("ViT-B-16", 17.58)],  # AdaCLIP's table; open_clip's model profile
)
def test_image_encoder_gflops_match_published_counts_in_eval_mode(name, reported):
    """Eval mode + no_grad takes the fused attention path; it must be counted all the same."""
    torch.manual_seed(0)
    model = AdaCLIP.from_config(
        ModelConfig.model_validate({"clip": {"name": name}, "selection": "uniform", "aggregation": "mean"})
    ).eval()
    assert image_encoder_gflops(model) == pytest.approx(reported, rel=0.05)
    assert not model.training
    assert torch.backends.mha.get_fastpath_enabled()  # counting restores the fast path


def test_vit_b_32_by_hand():
    """Patch embedding + 12 blocks over 50 tokens + the output projection, counted independently."""
    visual = open_clip.create_model("ViT-B-32").visual.eval()
    macs = 49 * 768 * 3 * 32 * 32 + transformer_macs(50, 768, layers=12) + 768 * 512
    flops, _ = count_flops(visual, lambda: visual(torch.zeros(1, 3, 224, 224)))
    assert flops / 2 == macs


def test_transformer_aggregator_attention_is_counted():
    model = tiny_model(selection="uniform", aggregation="transformer")
    k, d = 4, 64
    macs = transformer_macs(k, d) + k * d + k * d  # one layer over the K frames, Linear(D, 1), weighted sum
    assert aggregation_gflops(model) == pytest.approx(macs / 1e9, rel=1e-12)


def test_similarity_header_and_selector_transformer_attention_are_counted():
    hidden, mlp_hidden, pixels = 32, 8, 16 * 16
    model = tiny_model(
        sim_header="seqTransf",
        selector={"temporal": "transformer", "hidden_dim": hidden, "mlp_hidden": mlp_hidden},
    )
    k, d = 4, 64
    header = transformer_macs(k, d, layers=4)
    mlp_score = k * (2 * d * d + 2 * d * d + d) + k * d  # the MLP per frame, then the weighted sum
    assert aggregation_gflops(model) == pytest.approx((header + mlp_score) / 1e9, rel=1e-12)
    selector = N * pixels * hidden + transformer_macs(N, hidden) + N * (hidden * mlp_hidden + mlp_hidden)
    assert selector_gflops(model) == pytest.approx(selector / 1e9, rel=1e-12)
