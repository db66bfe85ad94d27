"""The retrieval task: forward + loss for one training batch, as open_clip's training task, and
the optimisation step around it.

Ray Train, the benchmarks and any other loop call the same `RetrievalTask` and `train_step`, so the
step is defined once. Pure PyTorch; under DDP the batch is one worker's shard and the loss is over the
global batch (every worker's rows gathered, gradients flowing to the local ones).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from adaclip.config import TrainConfig
from adaclip.models import AdaCLIP, VideoEmbedding
from adaclip.ops import distillation_loss, symmetric_contrastive_loss


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All workers' rows in rank order; only this worker's rows carry gradients.

    (torch.distributed.nn.all_gather would route gradients to every worker, but its backward
    needs all-to-all, which the gloo backend of CPU training lacks.)
    """
    world = world_size()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def worker_share(x: torch.Tensor) -> torch.Tensor:
    """`x` unchanged, its gradient divided by the world size: for a parameter used after the
    gather, whose gradient each worker computes in full from the global batch (the loss's
    x world size and DDP's average would otherwise make it world size times too large)."""
    world = world_size()
    if world == 1:
        return x
    return x.detach() + (x - x.detach()) / world


class RetrievalTask(nn.Module):
    """Symmetric contrastive loss of a batch of (tokens, frames), in one call so DDP syncs it.

    With `distill_weight` > 0 (a model with a video vector only) the loss adds that weight times
    the distillation of query scoring over the same kept frames (the teacher, no gradient) into
    the video vector's similarities (TeachCLIP's idea, with the model as its own teacher): the
    video vector learns to rank as query scoring does, so `rerank` needs fewer candidates. The
    student's logits carry the learned logit scale, so the term trains that temperature too.

    The loss is multiplied by the world size: DDP averages gradients over workers and each
    worker's only cover its own rows, so the result is the gradient of the global-batch loss.
    The logit scale is used after the gather, so each worker's gradient for it already covers
    the global batch: it takes its worker's share (`worker_share`).
    """

    def __init__(self, model: AdaCLIP, distill_weight: float = 0.0):
        super().__init__()
        if distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        if distill_weight and model.aggregator is None:
            raise ValueError("distillation needs a video vector: aggregation=qscore is the teacher itself")
        self.model = model
        self.distill_weight = distill_weight

    def forward(
        self,
        tokens: torch.Tensor,
        clip_frames: torch.Tensor,
        selector_frames: torch.Tensor,
        k: int,
        tau: float,
    ) -> torch.Tensor:
        text = gather_with_grad(self.model.encode_text(tokens))  # (B, D)
        video = self.model.encode_video(clip_frames, selector_frames, k=k, tau=tau)
        if video.video is not None:  # (B, D) one vector per video
            embedding = VideoEmbedding(
                video=gather_with_grad(video.video), frames=None, indices=None, logits=None
            )
        else:  # query scoring compares the (B, K, D) kept frames
            embedding = VideoEmbedding(
                video=None, frames=gather_with_grad(video.frames), indices=None, logits=None
            )
        logits = self.model.logits(text, embedding, worker_share(self.model.clip.logit_scale)).float()
        loss = symmetric_contrastive_loss(logits)
        if self.distill_weight:
            with torch.no_grad():
                frames = gather_with_grad(video.frames.detach())  # (B, K, D)
                teacher = self.model.logits(text, VideoEmbedding(None, frames, None, None)).float()
            loss = loss + self.distill_weight * distillation_loss(logits, teacher)
        return loss * world_size()


def adamw(model: AdaCLIP, train: TrainConfig) -> torch.optim.AdamW:
    """SPEC section 5's optimiser: AdamW over the model's parameter groups."""
    return torch.optim.AdamW(
        model.param_groups(train.lr, train.coef_lr, train.weight_decay), betas=train.betas
    )


def train_step(
    task: nn.Module,
    model: AdaCLIP,
    optimizer: torch.optim.Optimizer,
    rows: dict[str, torch.Tensor],
    k: int,
    tau: float,
    grad_clip: float,
    amp: bool = False,
) -> torch.Tensor:
    """One optimisation step on a batch (`tokens`, `clip_frames`, `selector_frames`): forward under
    bf16 autocast when `amp` and the model is on CUDA, backward, gradient clipping, the optimiser's
    step and the logit-scale clamp; the loss, detached. `task` is `model`'s `RetrievalTask` or its
    DDP wrapper."""
    device = model.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        loss = task(rows["tokens"], rows["clip_frames"], rows["selector_frames"], k, tau)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    model.clamp_logit_scale()
    return loss.detach()
