"""The training step's loss (`adaclip.training.RetrievalTask`): contrastive, plus optional
distillation of query scoring into the video vector, against float64 references."""

import numpy as np
import pytest
import torch

from adaclip.config import load_config
from adaclip.errors import ConfigError
from adaclip.models import AdaCLIP
from adaclip.training import RetrievalTask
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


def test_distillation_trains_the_student_towards_the_teacher():
    """Gradients of the distillation term reach the video vector's modules (MLP-Score)."""
    torch.manual_seed(0)
    model = AdaCLIP.from_config(tiny_cfg(aggregation="mlp")).train()
    clip_frames, selector_frames = batch(seed=4)
    tokens = model.tokenize(CAPTIONS)
    grads = []
    for weight in (0.0, 1.0):
        model.zero_grad()
        torch.manual_seed(1)  # same Gumbel noise in both passes
        RetrievalTask(model, weight)(tokens, clip_frames, selector_frames, K, 1.0).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.aggregator.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_distillation_needs_a_video_vector():
    with pytest.raises(ConfigError, match="distill_weight"):
        load_config(None, ["model.aggregation=qscore", "train.distill_weight=1"])
    with pytest.raises(ValueError, match="video vector"):
        RetrievalTask(AdaCLIP.from_config(tiny_cfg(aggregation="qscore")), 1.0)
