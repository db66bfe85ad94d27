"""Functional maths shared by models, evaluation and serving (SPEC.md sections 3 to 5).

Everything here is pure PyTorch and stateless. Similarity functions accept any float dtype and
compute in float32 (float64 inputs stay float64), so half-precision embeddings from an autocast
encoder give the same rankings as float32 ones.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

NORM_EPS = 1e-8
LOG_PROB_FLOOR = math.log(1e-8)  # p = log softmax(logits) is clamped below at log(1e-8)
MASK_EPS = 1e-40  # log(max(1 - a_prev, 1e-40)) masks already-picked frames
# Upper bound on elements of one text chunk's pooled vectors (chunk * V * D) in query scoring.
QSCORE_CHUNK_ELEMENTS = 1 << 24


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 when any input is float64."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def _check_temperature(temperature: float) -> None:
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_text_frames(text: Tensor, frames: Tensor) -> None:
    if text.dim() != 2:
        raise ValueError(f"text must have shape (T, D), got {tuple(text.shape)}")
    if frames.dim() != 3:
        raise ValueError(f"frames must have shape (V, F, D), got {tuple(frames.shape)}")
    if text.shape[1] != frames.shape[2]:
        raise ValueError(
            f"text width D={text.shape[1]} does not match frames width D={frames.shape[2]}; "
            "embed both with the same CLIP model"
        )
    if frames.shape[1] == 0:
        raise ValueError("frames has F=0 frames per video; every video needs at least one frame")


def normalize(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    """L2-normalise along the last axis, the norm clamped below by `eps` (zero vectors stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def mean_pool_similarity(text: Tensor, frames: Tensor, normalize_frames: bool = False) -> Tensor:
    """Cosine between each caption and each mean-pooled video: (T, D), (V, F, D) -> (T, V).

    Video vector = normalize(mean_f x_f) (Clip-Hitchhiker), or normalize(mean_f normalize(x_f))
    when `normalize_frames` (AdaCLIP's baseline).
    """
    _check_text_frames(text, frames)
    dtype = _compute_dtype(text, frames)
    x = frames.to(dtype)  # (V, F, D)
    if normalize_frames:
        x = normalize(x)
    video = normalize(x.mean(dim=1))  # (V, D)
    return normalize(text.to(dtype)) @ video.T  # (T, V)


def weighted_pool(frames: Tensor, scores: Tensor, temperature: float) -> Tensor:
    """normalize(sum_k softmax(scores / temperature)_k x_k) on the raw frames: (B, K, D), (B, K) -> (B, D).

    The aggregation step shared by MLP-Score, transformer and reuse_scores (SPEC section 4).
    """
    _check_temperature(temperature)
    if frames.dim() != 3 or scores.shape != frames.shape[:2]:
        raise ValueError(
            f"expected frames (B, K, D) and scores (B, K), got {tuple(frames.shape)} and {tuple(scores.shape)}"
        )
    dtype = _compute_dtype(frames, scores)
    w = torch.softmax(scores.to(dtype) / temperature, dim=-1)  # (B, K)
    pooled = torch.einsum("bk,bkd->bd", w, frames.to(dtype))  # (B, D)
    return normalize(pooled)


def query_scoring_weights(text: Tensor, frames: Tensor, temperature: float = 0.1) -> Tensor:
    """Query-scoring frame weights softmax_f(<t, x_f> / temperature) on unit vectors: -> (T, V, F).

    Materialises T*V*F values; the argmax over F is the frame that best matches each query.
    """
    _check_temperature(temperature)
    _check_text_frames(text, frames)
    dtype = _compute_dtype(text, frames)
    s = torch.einsum("td,vfd->tvf", normalize(text.to(dtype)), normalize(frames.to(dtype)))
    return torch.softmax(s / temperature, dim=-1)  # (T, V, F)


def query_scoring_similarity(
    text: Tensor,
    frames: Tensor,
    temperature: float = 0.1,
    variant: Literal["embedding", "scores"] = "embedding",
    *,
    max_chunk_elements: int = QSCORE_CHUNK_ELEMENTS,
) -> Tensor:
    """Clip-Hitchhiker query scoring (SPEC section 4 `qscore`): (T, D), (V, F, D) -> (T, V) cosine.

    s_f = <normalize(t), normalize(x_f)>, w = softmax(s / temperature) over frames.
    `embedding`: score = <normalize(t), normalize(sum_f w_f x_f)> on the raw x_f.
    `scores`: score = sum_f w_f s_f.
    Captions are processed in chunks so that no (T, V, F, D) tensor is ever built: at most
    `max_chunk_elements` elements of pooled (chunk, V, D) vectors exist at once.
    """
    _check_temperature(temperature)
    _check_text_frames(text, frames)
    if variant not in ("embedding", "scores"):
        raise ValueError(f"variant must be 'embedding' or 'scores', got {variant!r}")
    dtype = _compute_dtype(text, frames)
    t_unit = normalize(text.to(dtype))  # (T, D)
    x = frames.to(dtype)  # (V, F, D)
    x_unit = normalize(x)  # (V, F, D)
    num_videos, num_frames, width = x.shape
    per_caption = num_videos * max(num_frames, width)
    chunk = max(1, max_chunk_elements // max(per_caption, 1))
    out = []
    for start in range(0, t_unit.shape[0], chunk):
        t_c = t_unit[start : start + chunk]  # (C, D)
        s = torch.einsum("cd,vfd->cvf", t_c, x_unit)  # (C, V, F)
        w = torch.softmax(s / temperature, dim=-1)  # (C, V, F)
        if variant == "scores":
            out.append((w * s).sum(dim=-1))  # (C, V)
        else:
            video = normalize(torch.einsum("cvf,vfd->cvd", w, x))  # (C, V, D)
            out.append(torch.einsum("cd,cvd->cv", t_c, video))  # (C, V)
    if not out:
        return t_unit.new_zeros((0, num_videos))
    return torch.cat(out, dim=0)


def _check_k(k: int, num_frames: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_frames:
        raise ValueError(f"k must be an int with 1 <= k <= N={num_frames} frames, got {k!r}")


def _sample_gumbel(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Gumbel(0, 1) noise in float32; drawn on the generator's device when one is given."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    u = u.clamp_min(torch.finfo(torch.float32).tiny)
    return (-torch.log(-torch.log(u))).to(device)


def hard_topk_from_noise(logits: Tensor, gumbel: Tensor, k: int, tau: float) -> tuple[Tensor, Tensor]:
    """Training Hard-Top-k (SPEC section 3) with the Gumbel noise given explicitly.

    Returns (A, soft): A is (B, K, N) hard one-hots with straight-through gradients, soft the
    (B, K, N) soft one-hots a_r, both float32. Exposed so tests can replay a fixed noise draw.
    """
    _check_temperature(tau)
    _check_k(k, logits.shape[-1])
    p = torch.log_softmax(logits.float(), dim=-1).clamp_min(LOG_PROB_FLOOR)  # (B, N)
    y = p + gumbel.float()  # (B, N)
    picked = torch.zeros_like(y, dtype=torch.bool)  # (B, N)
    a_prev = torch.zeros_like(y)
    hards, softs = [], []
    for _ in range(k):
        y = y + torch.log((1.0 - a_prev).clamp_min(MASK_EPS))
        a = torch.softmax(y / tau, dim=-1)  # (B, N)
        # argmax of a_r == argmax of y (softmax is monotone); y never underflows to ties.
        idx = y.detach().masked_fill(picked, -math.inf).argmax(dim=-1)  # (B,)
        hard = F.one_hot(idx, num_classes=a.shape[-1]).to(a.dtype)  # (B, N)
        picked = picked | hard.bool()
        hards.append(hard)
        softs.append(a)
        a_prev = a
    hard = torch.stack(hards, dim=1)  # (B, K, N)
    soft = torch.stack(softs, dim=1)  # (B, K, N)
    # hard + (soft - soft.detach()) == hard - soft.detach() + soft, but the forward value is exactly 0/1.
    return hard + (soft - soft.detach()), soft


def hard_topk(
    logits: Tensor,
    k: int,
    tau: float,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Select K of N frames per video as one-hots: (B, N) logits -> (B, K, N) (SPEC section 3).

    training: Gumbel-perturbed K-round soft top-k with straight-through hard picks (distinct per
    video); inference: the K highest logits, highest first. Computed in float32; the result has the
    logits' dtype (float32 for non-float logits). Forward values are exactly 0 or 1 in any dtype.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, N), got {tuple(logits.shape)}")
    _check_k(k, logits.shape[-1])
    out_dtype = logits.dtype if logits.is_floating_point() else torch.float32
    if not training:
        idx = torch.topk(logits.detach().float(), k, dim=-1, largest=True, sorted=True).indices  # (B, K)
        return F.one_hot(idx, num_classes=logits.shape[-1]).to(out_dtype)
    gumbel = _sample_gumbel(logits.shape, logits.device, generator)
    selection, _ = hard_topk_from_noise(logits, gumbel, k, tau)
    return selection.to(out_dtype)


def tau_schedule(epoch: int, init_tau: float = 5.0, decay: float = 0.045, min_tau: float = 0.5) -> float:
    """Gumbel temperature for an epoch: max(init_tau * exp(-decay * epoch), min_tau)."""
    return max(init_tau * math.exp(-decay * epoch), min_tau)


def k_schedule(epoch: int, num_frames: int, top_k: int, warmup_epochs: int) -> int:
    """Frames kept at an epoch: N - 1 at epoch 0, falling linearly to top_k over warmup_epochs.

    Rounded to the nearest int and kept within [top_k, N]; warmup_epochs <= 0 means always top_k.
    """
    if not 1 <= top_k <= num_frames:
        raise ValueError(f"top_k must satisfy 1 <= top_k <= num_frames={num_frames}, got {top_k}")
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return top_k
    start = max(num_frames - 1, top_k)
    frac = max(epoch, 0) / warmup_epochs
    k = math.floor(start + (top_k - start) * frac + 0.5)
    return min(max(k, top_k), num_frames)


def symmetric_contrastive_loss(logits: Tensor) -> Tensor:
    """(CE over rows + CE over columns) / 2 of a (B, B) similarity matrix, diagonal positives."""
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (B, B) matrix, got {tuple(logits.shape)}")
    x = logits.to(_compute_dtype(logits))
    target = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(x, target) + F.cross_entropy(x.T, target)) / 2


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher || student) of the softmax over each row and each column of two (B, B) logit
    matrices, averaged over rows, then over the two directions; the teacher carries no gradient.

    Soft-target distillation (Hinton et al.) of a batch's text-to-video and video-to-text
    distributions, as TeachCLIP distils a query-dependent teacher into a one-vector student.
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must be (B, B) of one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    dtype = _compute_dtype(student_logits, teacher_logits)
    s, t = student_logits.to(dtype), teacher_logits.detach().to(dtype)

    def kl(student: Tensor, teacher: Tensor) -> Tensor:
        return F.kl_div(
            F.log_softmax(student, dim=-1),
            F.log_softmax(teacher, dim=-1),
            reduction="batchmean",
            log_target=True,
        )

    return (kl(s, t) + kl(s.T, t.T)) / 2
