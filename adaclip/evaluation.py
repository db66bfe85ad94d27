"""Retrieval evaluation: embed captions and decoded videos with a model, then SPEC section 6 metrics.

Pure PyTorch: the Ray jobs feed it batches of decoded frames (from Ray Data) and it never looks at
where they came from. Videos arrive in any order and some may be missing (failed to decode): rows
are put back in annotation order and captions of missing videos are left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaclip.metrics import t2v_metrics, v2t_metrics
from adaclip.models import AdaCLIP, VideoEmbedding


@torch.no_grad()
def embed_texts(
    model: AdaCLIP, texts: Sequence[str], context_length: int, batch_size: int = 256
) -> torch.Tensor:
    """Text embeddings (T, D) in float32 on the CPU, tokenised to `context_length` tokens (the
    config's `data.max_text_tokens`, the length training used: AdaCLIP's max_txt_len)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenize(list(texts[start : start + batch_size]), context_length).to(device)
        out.append(model.encode_text(tokens).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def embed_video_batch(model: AdaCLIP, batch: dict[str, Any]) -> VideoEmbedding:
    """Encode one batch of decoded videos (uint8 frames in numpy or torch) in eval mode."""
    device = next(model.parameters()).device
    clip = torch.tensor(np.asarray(batch["clip_frames"]), device=device)
    sel = torch.tensor(np.asarray(batch["selector_frames"]), device=device)
    return model.encode_video(clip, sel)


def concat_embeddings(parts: Sequence[VideoEmbedding], order: torch.Tensor) -> VideoEmbedding:
    """Concatenate batch embeddings and reorder them by `order` (a permutation of the rows)."""

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            return None
        return torch.cat([v.float().cpu() if v.is_floating_point() else v.cpu() for v in values])[order]

    return VideoEmbedding(
        video=cat("video"), frames=cat("frames"), indices=cat("indices"), logits=cat("logits")
    )


@dataclass
class VideoSet:
    """Embedded videos in annotation order; `present[i]` says whether annotation video i decoded."""

    embedding: VideoEmbedding
    video_index: torch.Tensor  # (V,) annotation index of each row
    timestamps: torch.Tensor  # (V, N) seconds of the N sampled frames


def embed_videos(model: AdaCLIP, batches: Iterable[dict[str, Any]]) -> VideoSet:
    """Encode every batch (columns clip_frames, selector_frames, video_index, timestamps)."""
    parts, index, stamps = [], [], []
    for batch in batches:
        if len(batch["video_index"]) == 0:
            continue
        parts.append(embed_video_batch(model, batch))
        index.append(torch.tensor(np.asarray(batch["video_index"])))
        stamps.append(torch.tensor(np.asarray(batch["timestamps"])))
    if not parts:
        raise ValueError("no video could be embedded: every video failed to decode")
    video_index = torch.cat(index)
    order = torch.argsort(video_index)
    return VideoSet(concat_embeddings(parts, order), video_index[order], torch.cat(stamps)[order])


def retrieval_metrics(
    model: AdaCLIP, text: torch.Tensor, caption_to_video: Sequence[int], videos: VideoSet
) -> dict[str, Any]:
    """t2v and v2t metrics of captions `text` (T, D) against `videos`; missing videos are skipped."""
    column = {int(v): i for i, v in enumerate(videos.video_index.tolist())}
    keep = [i for i, v in enumerate(caption_to_video) if int(v) in column]
    if not keep:
        raise ValueError("no caption belongs to an embedded video")
    target = [column[int(caption_to_video[i])] for i in keep]
    with torch.no_grad():
        sims = (
            model.similarity(text[keep].to(_device(model)), _to(videos.embedding, _device(model)))
            .float()
            .cpu()
        )
    return {
        "t2v": t2v_metrics(sims, target),
        "v2t": v2t_metrics(sims, target),
        "captions": len(keep),
        "videos": len(column),
        "skipped_captions": len(caption_to_video) - len(keep),
    }


def _device(model: AdaCLIP) -> torch.device:
    return next(model.parameters()).device


def _to(e: VideoEmbedding, device: torch.device) -> VideoEmbedding:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return VideoEmbedding(
        video=move(e.video), frames=move(e.frames), indices=move(e.indices), logits=move(e.logits)
    )


def evaluate_batches(
    model: AdaCLIP,
    texts: Sequence[str],
    caption_to_video: Sequence[int],
    batches: Iterable[dict[str, Any]],
    context_length: int,
) -> dict[str, Any]:
    """Embed the decoded videos of `batches` and the query `texts` (tokenised to `context_length`),
    then `retrieval_metrics`: one evaluation for validation during training and for `adaclip eval`."""
    model.eval()
    videos = embed_videos(model, batches)
    return retrieval_metrics(model, embed_texts(model, texts, context_length), caption_to_video, videos)
