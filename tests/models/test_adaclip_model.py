"""The tiny AdaCLIP end to end on CPU: forward + backward per aggregation and selection mode,
logit-scale clamp, optimiser parameter groups, encoding details and bfloat16 autocast."""

import math

import pytest
import torch

from adaclip.config import ModelConfig
from adaclip.errors import ConfigError
from adaclip.models import AdaCLIP, gather_frames, uniform_indices

B, N, K = 3, 8, 3


def tiny_cfg(**kw) -> ModelConfig:
    tree = {
        "clip": {"name": "adaclip-tiny"},
        "selector": {
            "backbone": "raw",
            "freeze_backbone": False,
            "input_size": 16,
            "hidden_dim": 64,
            "mlp_hidden": 32,
        },
        "num_frames": N,
        "top_k": K,
    }
    tree.update(kw)
    return ModelConfig.model_validate(tree)


def batch(seed: int = 0, b: int = B, n: int = N):
    g = torch.Generator().manual_seed(seed)
    clip_frames = torch.randint(0, 256, (b, n, 32, 32, 3), dtype=torch.uint8, generator=g)
    selector_frames = torch.randint(0, 256, (b, n, 16, 16, 1), dtype=torch.uint8, generator=g)
    return clip_frames, selector_frames


CAPTIONS = ["a dog runs on grass", "a red car drives", "people dance at night"]


def grad_norm(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


MODES = [
    (aggregation, selection)
    for aggregation in ["mean", "mlp", "transformer", "reuse_scores", "qscore"]
    for selection in ["learned", "uniform", "all"]
    if aggregation != "reuse_scores" or selection == "learned"  # reuse_scores reuses the selector's logits
]


@pytest.mark.parametrize("aggregation,selection", MODES)
def test_forward_backward(aggregation, selection):
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation=aggregation, selection=selection)).train()
    clip_frames, selector_frames = batch()
    video = model.encode_video(clip_frames, selector_frames, tau=2.0)
    kept = N if selection == "all" else K
    assert video.frames.shape == (B, kept, 64) and video.indices.shape == (B, kept)
    assert (video.video is None) == (aggregation == "qscore")
    text = model.encode_text(model.tokenize(CAPTIONS))
    loss = model.loss(text, video)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert grad_norm(model.clip.visual.parameters()) > 0
    assert grad_norm([model.clip.token_embedding.weight]) > 0
    assert model.clip.logit_scale.grad is not None
    if model.aggregator is not None and any(True for _ in model.aggregator.parameters()):
        assert grad_norm(model.aggregator.parameters()) > 0
    if selection == "learned":
        assert grad_norm(model.selector.parameters()) > 0  # straight-through Hard-Top-k reaches the policy
        assert video.logits.shape == (B, N)
        for row in video.indices.tolist():
            assert len(set(row)) == kept  # distinct picks
    else:
        assert model.selector is None and video.logits is None


def test_training_frames_are_the_selected_frame_embeddings():
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg()).train()
    clip_frames, selector_frames = batch()
    video = model.encode_video(clip_frames, selector_frames, tau=1.0)
    with torch.no_grad():
        expected = model.encode_frames(gather_frames(clip_frames, video.indices))
    torch.testing.assert_close(video.frames.detach(), expected, atol=1e-5, rtol=1e-5)


def test_selection_modes_pick_the_specified_frames():
    clip_frames, selector_frames = batch(n=16)
    uniform = AdaCLIP.from_config(tiny_cfg(selection="uniform", num_frames=16, top_k=5)).eval()
    sel = uniform.select(selector_frames, k=5)
    assert sel.indices[0].tolist() == [0, 3, 6, 9, 12]  # floor(i * 16 / 5)
    assert torch.equal(sel.onehots.argmax(-1), sel.indices)
    assert uniform_indices(16, 4).tolist() == [0, 4, 8, 12]
    everything = AdaCLIP.from_config(tiny_cfg(selection="all", num_frames=16, top_k=5)).eval()
    assert everything.select(selector_frames).indices[1].tolist() == list(range(16))
    video = everything.encode_video(clip_frames, selector_frames)
    assert video.frames.shape == (B, 16, 64)


def test_clip_backbone_selector_trains_and_infers():
    torch.manual_seed(0)
    cfg = tiny_cfg(selector={"backbone": "clip", "temporal": "lstm", "hidden_dim": 16, "mlp_hidden": 8})
    model = AdaCLIP.from_config(cfg).train()
    clip_frames, _ = batch()
    video = model.encode_video(clip_frames, None, tau=1.0)
    model.loss(model.encode_text(model.tokenize(CAPTIONS)), video).backward()
    assert grad_norm(model.selector.parameters()) > 0
    model.eval()
    with torch.no_grad():
        video = model.encode_video(clip_frames, None)
    assert torch.equal(video.indices, video.logits.topk(K).indices)


def test_clamp_logit_scale():
    model = AdaCLIP.from_config(tiny_cfg())
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert model.clip.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.clip.logit_scale.fill_(2.0)
    model.clamp_logit_scale()
    assert model.clip.logit_scale.item() == pytest.approx(2.0)
    clip_frames, selector_frames = batch()
    model.eval()
    with torch.no_grad():
        video = model.encode_video(clip_frames, selector_frames)
        text = model.encode_text(model.tokenize(CAPTIONS))
        torch.testing.assert_close(model.logits(text, video), math.exp(2.0) * model.similarity(text, video))


def test_param_groups():
    cfg = tiny_cfg(
        selector={"backbone": "mobilenet_v2", "freeze_backbone": True, "input_size": 32, "hidden_dim": 16}
    )
    model = AdaCLIP.from_config(cfg)
    groups = model.param_groups(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    seen: dict[int, dict] = {}
    for group in groups:
        for name, p in zip(group["param_names"], group["params"], strict=True):
            assert id(p) not in seen, f"{name} is in two groups"
            seen[id(p)] = group
            is_clip = name.startswith("clip.")
            assert group["lr"] == pytest.approx(1e-7 if is_clip else 1e-4), name
            no_decay = name.endswith(".bias") or ".ln_" in name or name.split(".")[-2].startswith("ln")
            assert group["weight_decay"] == (0.0 if no_decay else 0.2), name
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(seen) == trainable  # every trainable parameter exactly once, frozen ones nowhere
    by_name = {n: seen[id(p)] for n, p in model.named_parameters() if p.requires_grad}
    # SPEC section 5: no decay on biases and norms, and only there
    assert by_name["clip.visual.transformer.resblocks.0.ln_1.weight"]["weight_decay"] == 0.0
    assert by_name["clip.ln_final.bias"]["weight_decay"] == 0.0
    assert by_name["clip.visual.transformer.resblocks.0.mlp.c_fc.bias"]["weight_decay"] == 0.0
    assert by_name["clip.logit_scale"]["weight_decay"] == 0.2
    assert by_name["clip.token_embedding.weight"]["weight_decay"] == 0.2
    assert by_name["clip.visual.class_embedding"]["weight_decay"] == 0.2
    assert by_name["selector.temporal.position_embeddings.weight"]["weight_decay"] == 0.2
    assert by_name["aggregator.mlp.0.weight"]["weight_decay"] == 0.2
    assert by_name["aggregator.mlp.0.weight"]["lr"] == 1e-4
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    clip_frames = torch.randint(0, 256, (B, N, 32, 32, 3), dtype=torch.uint8)
    selector_frames = torch.randint(0, 256, (B, N, 32, 32, 3), dtype=torch.uint8)
    model.train()
    loss = model.loss(
        model.encode_text(model.tokenize(CAPTIONS)), model.encode_video(clip_frames, selector_frames)
    )
    loss.backward()
    optimizer.step()
    model.clamp_logit_scale()


def test_encode_frames_chunks_and_resizes():
    model = AdaCLIP.from_config(tiny_cfg()).eval()
    clip_frames, _ = batch()
    with torch.no_grad():
        whole = model.encode_frames(clip_frames)
        model.encode_chunk_size = 5
        chunked = model.encode_frames(clip_frames)
        bigger = model.encode_frames(clip_frames.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert whole.shape == (B, N, 64)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert bigger.shape == whole.shape and torch.isfinite(bigger).all()  # 64x64 input resized to 32
    with pytest.raises(ValueError, match="RGB"):
        model.encode_frames(clip_frames[..., :1])


def seeded(cfg, seed: int = 0) -> AdaCLIP:
    torch.manual_seed(seed)
    return AdaCLIP.from_config(cfg)


def test_model_version_hashes_config_and_weights():
    a = seeded(tiny_cfg())
    version = a.model_version
    assert len(version) == 12
    assert version == seeded(tiny_cfg()).model_version  # same config, same weights
    assert version != seeded(tiny_cfg(top_k=4)).model_version  # config only
    assert version != seeded(tiny_cfg(), seed=1).model_version  # weights only
    b = seeded(tiny_cfg(), seed=1)
    b.load_state_dict(a.state_dict())
    assert b.model_version == version  # the version follows the weights, not the object
    with torch.no_grad():
        a.clip.logit_scale.add_(1e-3)  # one scalar changed in place (as an optimiser step does)
    assert a.model_version != version


def test_tokenize():
    a = AdaCLIP.from_config(tiny_cfg())
    assert a.tokenize("one caption").shape == (1, 32)
    assert a.tokenize(["a", "b"], context_length=16).shape == (2, 16)
    with pytest.raises(ConfigError, match="context_length=64"):
        a.tokenize(["a"], context_length=64)


def test_text_shorter_than_clips_context_is_encoded_as_a_short_sequence():
    """AdaCLIP tokenises to max_txt_len (< CLIP's 77) and runs the tower on that many positions."""
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg()).eval()
    tokens = model.tokenize(["a small red circle moves to the left of a big blue square"], context_length=8)
    clip = model.clip
    with torch.no_grad():
        x = clip.token_embedding(tokens) + clip.positional_embedding[:8]  # only 8 positions
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:8, :8]))
        expected = x[torch.arange(1), tokens.argmax(dim=-1)] @ clip.text_projection
        torch.testing.assert_close(model.encode_text(tokens), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mlp", "qscore"])
def test_bfloat16_autocast_on_cpu(aggregation):
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation=aggregation, sim_header="transformer"))
    clip_frames, selector_frames = batch()
    tokens = model.tokenize(CAPTIONS)
    model.eval()
    with torch.no_grad():
        reference = model.similarity(
            model.encode_text(tokens), model.encode_video(clip_frames, selector_frames)
        )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        video = model.encode_video(clip_frames, selector_frames)
        sims = model.similarity(model.encode_text(tokens), video)
    assert sims.shape == (B, B) and sims.dtype == torch.float32 and torch.isfinite(sims).all()
    torch.testing.assert_close(sims, reference, atol=0.05, rtol=0)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(model.encode_text(tokens), model.encode_video(clip_frames, selector_frames))
    loss.backward()
    assert torch.isfinite(loss)
