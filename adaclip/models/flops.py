"""Compute cost per video (SPEC section 6), counted from the actual modules with FlopCounterMode.

Units follow AdaCLIP's tables (and ptflops, which AdaCLIP used): one multiply-accumulate counts as
one FLOP, so these "GFLOPs" are half of FlopCounterMode's raw count (CLIP ViT-B/32 = 4.4 per frame).
FlopCounterMode counts matmuls, convolutions and attention; LSTM cells, which it skips, are added
analytically (4 gates x H x (input + H) per step and direction). Element-wise ops are not counted.

Counting runs with attention unfused: in eval mode under no_grad, ``nn.MultiheadAttention`` takes
PyTorch's fused fast path and CPU scaled-dot-product attention a flash kernel, both invisible to
FlopCounterMode (a ViT-B/32 frame would count 2.9 GFLOPs instead of 4.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from adaclip.models.adaclip import AdaCLIP

FLOPS_PER_MAC = 2  # FlopCounterMode counts a multiply-add as 2 FLOPs; AdaCLIP reports it as 1


def _lstm_flops(module: nn.LSTM, x: Tensor) -> int:
    steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    dirs = 2 if module.bidirectional else 1
    h, total = module.hidden_size, 0
    for layer in range(module.num_layers):
        in_dim = module.input_size if layer == 0 else h * dirs
        total += FLOPS_PER_MAC * 4 * h * (in_dim + h) * steps * dirs
    return total


@contextmanager
def unfused_attention() -> Iterator[None]:
    """Attention as plain matmuls that FlopCounterMode sees: no MHA fast path, math SDPA kernel."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_flops(
    model: nn.Module, fn: Callable[[], object], track: dict[str, nn.Module] | None = None
) -> tuple[int, dict[str, int]]:
    """Raw FLOPs of ``fn()`` without grad: (total incl. LSTMs, FLOPs spent inside each ``track`` module)."""
    extra = [0]
    tracked = dict.fromkeys(track or {}, 0)
    counter = FlopCounterMode(display=False)

    def lstm_hook(module: nn.Module, args: tuple, _out: object) -> None:
        extra[0] += _lstm_flops(module, args[0])

    def enter(key: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple) -> None:
            tracked[key] -= counter.get_total_flops() + extra[0]

        return hook

    def leave(key: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, _out: object) -> None:
            tracked[key] += counter.get_total_flops() + extra[0]

        return hook

    handles = [m.register_forward_hook(lstm_hook) for m in model.modules() if isinstance(m, nn.LSTM)]
    for key, module in (track or {}).items():
        handles += [module.register_forward_pre_hook(enter(key)), module.register_forward_hook(leave(key))]
    try:
        with torch.no_grad(), unfused_attention(), counter:
            fn()
    finally:
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops()) + extra[0], {k: int(v) for k, v in tracked.items()}


def _giga(flops: float) -> float:
    return flops / FLOPS_PER_MAC / 1e9


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def image_encoder_gflops(model: AdaCLIP) -> float:
    """GFLOPs of CLIP's image encoder for one frame."""
    visual = model.clip.visual
    p = next(visual.parameters())
    x = torch.zeros(1, 3, model.image_size, model.image_size, dtype=p.dtype, device=p.device)
    with _eval_mode(model):
        return _giga(count_flops(model, lambda: visual(x))[0])


def selector_gflops(model: AdaCLIP, num_frames: int | None = None) -> float:
    """GFLOPs of the selector for one video: N x backbone + temporal context + scorer (0 without one)."""
    selector = model.selector
    if selector is None:
        return 0.0
    n = num_frames or model.cfg.num_frames
    if selector.reads_clip_embeddings:  # its "backbone" is the CLIP embeddings, counted as image encoder
        x = torch.zeros(1, n, model.embed_dim, device=model.device)
    else:
        s = model.cfg.selector.input_size
        x = torch.zeros(1, n, s, s, selector.channels, dtype=torch.uint8, device=model.device)
    with _eval_mode(model):
        return _giga(count_flops(model, lambda: selector(x))[0])


def aggregation_gflops(model: AdaCLIP, k: int | None = None) -> float:
    """GFLOPs of the similarity header + query-independent aggregator over K frames (qscore: 0 here,
    its cost is per query and video at search time)."""
    k = model._resolve_k(k, model.cfg.num_frames)
    frames = torch.zeros(1, k, model.embed_dim, device=model.device)
    positions = torch.arange(k, device=model.device).unsqueeze(0)

    def run() -> None:
        x = frames if model.header is None else model.header(frames, positions)
        if model.aggregator is not None:
            model.aggregator(x, torch.zeros(1, k, device=model.device))

    with _eval_mode(model):
        return _giga(count_flops(model, run)[0])


def gflops_per_video(model: AdaCLIP, num_frames: int | None = None, k: int | None = None) -> dict[str, float]:
    """SPEC section 6: K x CLIP image encoder + N x selector backbone + temporal + scorer (+ aggregation).

    The clip / frozen_clip selector backbones need all N CLIP embeddings, so N frames are encoded there.
    """
    n = num_frames or model.cfg.num_frames
    k = model._resolve_k(k, n)
    encoded = n if model.selector is not None and model.selector.reads_clip_embeddings else k
    out = {
        "image_encoder": encoded * image_encoder_gflops(model),
        "selector": selector_gflops(model, n),
        "aggregation": aggregation_gflops(model, k),
    }
    out["total"] = sum(out.values())
    out["frames_encoded"] = float(encoded)
    return out


def measure_encode_video_gflops(
    model: AdaCLIP, clip_frames: Tensor, selector_frames: Tensor | None, k: int | None = None
) -> dict[str, float]:
    """GFLOPs of one real eval-mode ``encode_video`` call on this batch: image encoder part and total."""
    with _eval_mode(model):
        total, parts = count_flops(
            model, lambda: model.encode_video(clip_frames, selector_frames, k=k), {"image": model.clip.visual}
        )
    return {"image_encoder": _giga(parts["image"]), "total": _giga(total)}
