"""The training step's loss (`adaclip.training.RetrievalTask`): contrastive, plus optional
distillation of query scoring into the video vector, against float64 references."""

import numpy as np
import pytest
import torch
from processes import free_port

from adaclip.config import load_config
from adaclip.errors import ConfigError
from adaclip.models import AdaCLIP, VideoEmbedding
from adaclip.models.adaclip import MAX_LOGIT_SCALE
from adaclip.ops import distillation_loss
from adaclip.training import RetrievalTask, adamw, train_step
from ray_jobs.train import check_trainable
from tests.models.test_adaclip_model import CAPTIONS, K, batch, tiny_cfg
from tests.test_ops import ref_distillation, ref_qscore, ref_symmetric_loss


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("distill_weight", [0.0, 0.5, 2.0])
def test_loss_is_contrastive_plus_weighted_distillation_of_query_scoring(distill_weight):
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp", qscore_temperature=0.2)).eval()
    clip_frames, selector_frames = batch(seed=3)
    tokens = model.tokenize(CAPTIONS)
    with torch.no_grad():
        got = RetrievalTask(model, distill_weight)(tokens, clip_frames, selector_frames, K, 1.0).item()
        text = model.encode_text(tokens).double().numpy()
        video = model.encode_video(clip_frames, selector_frames, k=K)
        scale = float(model.clip.logit_scale.exp())
    student = scale * unit(text) @ unit(video.video.double().numpy()).T
    teacher = scale * ref_qscore(text, video.frames.double().numpy(), 0.2, "embedding")
    want = ref_symmetric_loss(student) + distill_weight * ref_distillation(student, teacher)
    assert got == pytest.approx(want, rel=1e-4)


def test_distillation_gradient_moves_the_video_vector_towards_query_scoring():
    """The term's gradient reaches MLP-Score, and a small step along it on MLP-Score alone lowers
    the distillation loss (the teacher, query scoring over the same frames, does not move)."""
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp")).eval()  # deterministic selection
    clip_frames, selector_frames = batch(seed=4)
    tokens = model.tokenize(CAPTIONS)

    def distill_term() -> torch.Tensor:
        text = model.encode_text(tokens)
        video = model.encode_video(clip_frames, selector_frames, k=K)
        student = model.logits(text, VideoEmbedding(video.video, video.frames, None, None))
        teacher = model.logits(text, VideoEmbedding(None, video.frames, None, None))
        return distillation_loss(student, teacher)

    before = distill_term()
    before.backward()
    params = list(model.aggregator.parameters())
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    assert norm > 0
    with torch.no_grad():
        for p in params:
            p -= 1e-2 * p.grad / norm  # a short step along the normalised gradient
        after = distill_term()
    assert after.item() < before.item() - 1e-3 * 1e-2 * norm.item()  # well beyond float32 noise


def test_train_step_returns_the_loss_clips_the_gradient_steps_and_clamps_the_logit_scale():
    """One `train_step`: the loss is the task's on the batch before the step, the gradient it steps
    with has the clipped norm, every trainable parameter that had a gradient moves, and a logit scale
    pushed beyond CLIP's bound comes back to it."""
    torch.manual_seed(0)
    cfg = load_config("configs/tiny.yaml")
    model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp")).eval()  # deterministic selection
    clip_frames, selector_frames = batch(seed=5)
    rows = {
        "tokens": model.tokenize(CAPTIONS),
        "clip_frames": clip_frames,
        "selector_frames": selector_frames,
    }
    task = RetrievalTask(model)
    with torch.no_grad():
        model.clip.logit_scale.fill_(MAX_LOGIT_SCALE + 1.0)
        want = task(rows["tokens"], clip_frames, selector_frames, K, 1.0).item()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = train_step(task, model, adamw(model, cfg.train), rows, K, 1.0, grad_clip=1e-3, amp=True)
    assert not loss.requires_grad and loss.item() == pytest.approx(want, rel=1e-5)  # amp: CUDA only
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) == pytest.approx(1e-3, rel=1e-3)
    moved = [n for n, p in model.named_parameters() if p.grad is not None and not torch.equal(p, before[n])]
    assert len(moved) == len(grads)
    assert float(model.clip.logit_scale) == pytest.approx(MAX_LOGIT_SCALE)


def test_distillation_needs_a_video_vector():
    cfg = load_config(None, ["model.aggregation=qscore", "train.distill_weight=1"])  # fine to evaluate
    with pytest.raises(ConfigError, match="distill_weight"):
        check_trainable(cfg)
    with pytest.raises(ValueError, match="video vector"):
        RetrievalTask(AdaCLIP.from_config(tiny_cfg(aggregation="qscore")), 1.0)


def _ddp_worker(rank: int, world: int, port: int, state: dict, inputs: tuple, out: str) -> None:
    """One DDP worker (gloo) on its shard of the batch: saves its parameters' gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp")).eval()
        model.load_state_dict(state)
        task = DistributedDataParallel(RetrievalTask(model, 0.5), find_unused_parameters=True)
        shard = [x.chunk(world)[rank] for x in inputs]
        task(*shard, K, 1.0).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save(grads, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_workers_get_the_gradient_of_the_global_batch_loss(tmp_path):
    """Two gloo workers, each on half the batch, end with every gradient (the logit scale's too,
    which each worker computes from the gathered global batch) equal to one process's on the
    whole batch; in eval mode, so that selection is deterministic (no Gumbel noise per process)."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp")).eval()  # deterministic selection
    clip_frames, selector_frames = batch(seed=5, b=4)
    inputs = (model.tokenize([*CAPTIONS, "a cat sleeps"]), clip_frames, selector_frames)
    RetrievalTask(model, 0.5)(*inputs, K, 1.0).backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    port = free_port()
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    mp.spawn(_ddp_worker, args=(2, port, state, inputs, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got.keys() == want.keys()
        assert "clip.logit_scale" in got
        for name, grad in want.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
