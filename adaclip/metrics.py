"""Retrieval metrics over a caption x video similarity matrix (SPEC.md section 6).

Ranks count the candidates scored strictly higher than the true one, so a tie with the true
candidate never hurts it. Computation is in float64 numpy whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

RECALL_AT = (1, 5, 10, 50)


def _as_float64(sims: Tensor | np.ndarray) -> np.ndarray:
    """A (T, V) float64 numpy copy of a torch tensor (any dtype, any device) or numpy array."""
    if isinstance(sims, Tensor):
        arr = sims.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        arr = np.asarray(sims, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"sims must be a 2-D (captions, videos) matrix, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"sims must have at least one caption and one video, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("sims contains NaN; check the embeddings before computing metrics")
    return arr


def _caption_targets(
    caption_to_video: Sequence[int] | Tensor | np.ndarray | None, num_captions: int, num_videos: int
) -> np.ndarray:
    """Validated int64 array g with g[i] = column of caption i's video."""
    if caption_to_video is None:
        if num_captions != num_videos:
            raise ValueError(
                f"sims is {num_captions}x{num_videos} (not square): pass caption_to_video "
                "giving the video column of each caption"
            )
        return np.arange(num_captions, dtype=np.int64)
    if isinstance(caption_to_video, Tensor):
        caption_to_video = caption_to_video.detach().cpu().numpy()
    g = np.asarray(caption_to_video)
    if g.ndim != 1 or g.shape[0] != num_captions:
        raise ValueError(
            f"caption_to_video must list one video column per caption ({num_captions}), got shape {g.shape}"
        )
    if g.dtype.kind not in "iu":
        raise ValueError(f"caption_to_video must hold integer column indices, got dtype {g.dtype}")
    if num_captions and (g.min() < 0 or g.max() >= num_videos):
        bad = g[(g < 0) | (g >= num_videos)][0]
        raise ValueError(f"caption_to_video holds column {bad}, outside the {num_videos} videos of sims")
    return g.astype(np.int64)


def _summarise(ranks: np.ndarray) -> dict[str, float]:
    """R@k in percent of ranks below k, and median / mean of rank + 1."""
    out = {f"R{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_AT}
    out["MedR"] = float(np.median(ranks + 1))
    out["MeanR"] = float(np.mean(ranks + 1))
    return out


def t2v_ranks(
    sims: Tensor | np.ndarray, caption_to_video: Sequence[int] | Tensor | np.ndarray | None = None
) -> np.ndarray:
    """Text-to-video rank of each caption: the number of videos scored strictly above its own. -> (T,)"""
    s = _as_float64(sims)
    g = _caption_targets(caption_to_video, *s.shape)
    true = s[np.arange(s.shape[0]), g]  # (T,)
    return (s > true[:, None]).sum(axis=1)


def v2t_ranks(
    sims: Tensor | np.ndarray, caption_to_video: Sequence[int] | Tensor | np.ndarray | None = None
) -> np.ndarray:
    """Video-to-text rank of each video that has captions. -> (V',) in video order.

    Captions are ranked per video (a column of sims): caption i's rank for video v is the number
    of captions j with sims[j, v] > sims[i, v]; a video's rank is the smallest rank among its own
    captions. Videos with no caption (distractors) are left out.
    """
    s = _as_float64(sims)
    g = _caption_targets(caption_to_video, *s.shape)
    best = np.full(s.shape[1], -np.inf)  # (V,) best own-caption score per video
    np.maximum.at(best, g, s[np.arange(s.shape[0]), g])
    has_caption = np.zeros(s.shape[1], dtype=bool)
    has_caption[g] = True
    # The smallest rank among a video's captions is that of its best-scored caption.
    ranks = (s > best[None, :]).sum(axis=0)  # (V,)
    return ranks[has_caption]


def t2v_metrics(
    sims: Tensor | np.ndarray, caption_to_video: Sequence[int] | Tensor | np.ndarray | None = None
) -> dict[str, float]:
    """Text-to-video R@1/5/10/50 (percent), MedR, MeanR for a (captions, videos) similarity matrix.

    caption_to_video[i] is the column of caption i's video; None means caption i belongs to video i.
    """
    return _summarise(t2v_ranks(sims, caption_to_video))


def v2t_metrics(
    sims: Tensor | np.ndarray, caption_to_video: Sequence[int] | Tensor | np.ndarray | None = None
) -> dict[str, float]:
    """Video-to-text R@1/5/10/50 (percent), MedR, MeanR; see `v2t_ranks` for how a video is ranked."""
    return _summarise(v2t_ranks(sims, caption_to_video))
