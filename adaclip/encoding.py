"""The single-video ingestion path shared by the Serve app and the bulk ingestion job.

file -> ``content_hash`` (the video id's input, so re-ingesting the same bytes is idempotent) ->
``decode_for_model`` (N cheap views) -> ``encode_decoded`` (the selector keeps K frames, only those
go through CLIP, aggregation gives the video vector) -> ``to_indexed`` (one index point with its
payload). Pure PyTorch: Ray Serve and Ray Data only decide where and in what batches this runs.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaclip.checkpoint import read_checkpoint
from adaclip.config import Config
from adaclip.errors import ConfigError
from adaclip.evaluation import embed_texts
from adaclip.index import (
    KEY_DURATION,
    KEY_MODEL_VERSION,
    KEY_NUM_WINDOWS,
    KEY_SOURCE,
    KEY_TIMESTAMPS,
    KEY_TITLE,
    KEY_VIDEO_ID,
    KEY_WINDOW,
    KEY_WINDOW_END,
    KEY_WINDOW_START,
    IndexedVideo,
    video_id,
    window_id,
)
from adaclip.index.active import ActiveModel
from adaclip.models import AdaCLIP
from adaclip.models.aggregation import MeanAggregator
from adaclip.video.decode import DecodedVideo
from adaclip.video.settings import DecodeSettings

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20  # bytes read per step when hashing a file
KEY_CONTENT_HASH = "content_hash"
KEY_METADATA = "metadata"


@dataclass
class EncodedVideo:
    """One video as the model sees it at inference: what goes into the index."""

    video: np.ndarray  # (D,) unit video vector (the ANN vector)
    frames: np.ndarray  # (K, D) kept frame embeddings, in temporal order
    frame_indices: np.ndarray  # (K,) frame numbers in the file of the kept frames
    frame_timestamps: np.ndarray  # (K,) seconds of the kept frames
    duration: float  # seconds
    fps: float
    num_video_frames: int
    window: int = 0  # which window of the video (adaclip.video.windows), of num_windows
    num_windows: int = 1
    window_start: float = 0.0  # seconds
    window_end: float = 0.0  # seconds

    @staticmethod
    def columns(videos: Sequence[EncodedVideo | None], dim: int, k: int) -> dict[str, np.ndarray]:
        """Batch columns of encoded videos; a None (a video that failed) gives a zero row."""
        n = len(videos)
        out = {
            "video": np.zeros((n, dim), np.float32),
            "frames": np.zeros((n, k, dim), np.float32),
            "frame_indices": np.zeros((n, k), np.int64),
            "frame_timestamps": np.zeros((n, k), np.float64),
            "duration": np.zeros(n, np.float64),
            "fps": np.zeros(n, np.float64),
            "num_video_frames": np.zeros(n, np.int64),
            "window": np.zeros(n, np.int64),
            "num_windows": np.ones(n, np.int64),
            "window_start": np.zeros(n, np.float64),
            "window_end": np.zeros(n, np.float64),
        }
        for i, video in enumerate(videos):
            if video is not None:
                for key, values in out.items():
                    values[i] = getattr(video, key)
        return out

    @classmethod
    def from_columns(cls, batch: dict[str, np.ndarray], i: int) -> EncodedVideo:
        """Row `i` of batch columns made by `columns`."""
        return cls(
            video=batch["video"][i],
            frames=batch["frames"][i],
            frame_indices=batch["frame_indices"][i],
            frame_timestamps=batch["frame_timestamps"][i],
            duration=float(batch["duration"][i]),
            fps=float(batch["fps"][i]),
            num_video_frames=int(batch["num_video_frames"][i]),
            window=int(batch["window"][i]),
            num_windows=int(batch["num_windows"][i]),
            window_start=float(batch["window_start"][i]),
            window_end=float(batch["window_end"][i]),
        )


def content_hash(path: str | Path, chunk: int = HASH_CHUNK) -> str:
    """Hex sha256 of a file's bytes, read in chunks (memory stays flat for any file size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_config(cfg: Config, checkpoint: str | Path | None) -> Config:
    """The config to serve with: the model and data sections of `checkpoint` (what its weights were
    trained as) when given, everything else (index, ...) from `cfg`."""
    if checkpoint is None:
        return cfg
    stored = Config.model_validate(read_checkpoint(checkpoint)["config"])
    return cfg.model_copy(update={"model": stored.model, "data": stored.data})


def load_encoder_model(
    cfg: Config, checkpoint: str | Path | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> AdaCLIP:
    """The model that embeds videos and texts, in eval mode.

    With a checkpoint: its weights. Without one: `cfg.model` as configured (pretrained CLIP or a
    random init); a random init is seeded with `seed`, so every process that builds it (the video
    encoder, the text encoder, a bulk job) gets the same weights and their vectors agree.
    """
    if checkpoint is not None:
        from adaclip.checkpoint import load_model

        model, _ = load_model(checkpoint, device=device)
        return model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AdaCLIP.from_config(cfg.model, device=device)
    return model.eval()


def decode_for_model(path: str | Path, cfg: Config) -> DecodedVideo:
    """Decode the N frames the model reads (both views), deterministically (never `random` sampling).

    Raises VideoDecodeError for a missing, empty, truncated, corrupt or non-video file.
    """
    return DecodeSettings.from_config(cfg, train=False).decode(path)


def load_serving_model(
    cfg: Config, checkpoint: str | Path | None, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[Config, AdaCLIP]:
    """The config to serve with (`resolve_config`) and the model of `checkpoint`, or a random init
    with `seed`."""
    resolved = resolve_config(cfg, checkpoint)
    return resolved, load_encoder_model(resolved, checkpoint, device, seed)


def load_active_model(
    cfg: Config, active: ActiveModel, device: str | torch.device = "cpu"
) -> tuple[Config, AdaCLIP]:
    """The config and model an index's active record names (`adaclip.index.active`); ConfigError
    when they no longer give the recorded version (the checkpoint changed on disk)."""
    resolved, model = load_serving_model(cfg, active.checkpoint, device, active.seed)
    if model.model_version != active.model_version:
        raise ConfigError(
            f"checkpoint {active.checkpoint} (seed {active.seed}) now gives model {model.model_version}, "
            f"the index's active model is {active.model_version}"
        )
    return resolved, model


def decode_windows_for_model(path: str | Path, cfg: Config) -> list[DecodedVideo]:
    """What the index stores of a file: N frames per window of `index.window_seconds` (one window
    for a short video, equal to `decode_for_model`). Raises VideoDecodeError."""
    return DecodeSettings.for_index(cfg).decode_all(path)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def encode_decoded(model: AdaCLIP, decoded: Sequence[DecodedVideo]) -> list[EncodedVideo]:
    """Encode decoded videos in one batch (eval mode: CLIP runs on the K selected frames only).

    All videos must share the decode settings (same N and frame sizes). For query-scoring models
    (no aggregator) the ANN vector is SPEC's `mean` of the kept frames, normalize(mean_k x_k)
    (AdaCLIP's normalize(mean_k normalize(x_k)) with `model.mean_normalize_frames`).
    """
    if not decoded:
        return []
    model.eval()
    device = model.device
    clip = torch.from_numpy(np.stack([d.clip_frames for d in decoded])).to(device)  # (B, N, S, S, 3)
    views = torch.from_numpy(np.stack([d.selector_frames for d in decoded])).to(device)  # (B, N, s, s, C)
    emb = model.encode_video(clip, views)
    frames = emb.frames.float()  # (B, K, D)
    if emb.video is not None:
        video = emb.video.float()  # (B, D)
    else:
        video = MeanAggregator(model.cfg.mean_normalize_frames)(frames)  # (B, D)
    video = _unit(video).cpu().numpy()
    frames_np = frames.cpu().numpy()
    kept = emb.indices.cpu().numpy()  # (B, K) positions among the N sampled frames
    out = []
    for b, d in enumerate(decoded):
        order = np.argsort(kept[b], kind="stable")  # temporal order; query scoring is order-free
        pos = kept[b][order]
        out.append(
            EncodedVideo(
                video=video[b],
                frames=frames_np[b][order],
                frame_indices=np.asarray(d.indices)[pos].astype(np.int64),
                frame_timestamps=np.asarray(d.timestamps, dtype=np.float64)[pos],
                duration=float(d.duration),
                fps=float(d.fps),
                num_video_frames=int(d.num_video_frames),
                window=d.window,
                num_windows=d.num_windows,
                window_start=d.span[0],
                window_end=d.span[1],
            )
        )
    return out


@torch.no_grad()
def encode_queries(model: AdaCLIP, texts: Sequence[str], context_length: int) -> np.ndarray:
    """Unit text embeddings (T, D) float32 for search queries (`context_length`: data.max_text_tokens)."""
    model.eval()
    return _unit(embed_texts(model, list(texts), context_length).float()).numpy()


class _TextTower(torch.nn.Module):
    def __init__(self, model: AdaCLIP):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class QueryEncoder:
    """`encode_queries` for a serving process: the model's text path traced once (TorchScript).

    Why: eager PyTorch runs a short query as hundreds of small ops, each releasing and re-taking
    the GIL, so in a process whose event loop also wants the GIL each op can wait out a switch
    interval; the traced graph is one call into C++ (and faster alone too). The trace shares the
    model's weights and gives the same vectors (tested); a model whose trace fails, or does not
    reproduce the eager vectors at another batch size, is run eagerly, with a warning."""

    def __init__(self, model: AdaCLIP, context_length: int):
        self.model, self.context_length = model.eval(), context_length
        eager = _TextTower(model)
        self._text: torch.nn.Module = eager
        one, two = (model.tokenize(t, context_length).to(model.device) for t in (["a"], ["a query", "b"]))
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
                traced = torch.jit.trace(eager, one, check_trace=False)
                for _ in range(2):  # the first runs profile and optimise the graph: check what serves
                    traced(two)
                if not torch.allclose(traced(two), eager(two), atol=1e-5):
                    raise ValueError("the trace gives other vectors at batch size 2")
            self._text = traced
        except Exception as e:  # noqa: BLE001 - tracing is an optimisation; eager is always right
            log.warning("query encoder: running the text path eagerly, tracing failed: %s", e)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings (T, D) float32."""
        tokens = self.model.tokenize(list(texts), self.context_length).to(self.model.device)
        return _unit(self._text(tokens).float().cpu()).numpy()


def to_indexed(
    encoded: EncodedVideo,
    content_sha256: str,
    model_version: str,
    source: str,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    video: str | None = None,
) -> IndexedVideo:
    """The index point of an encoded video (window): id from (content hash, model version, window)
    and its payload (source, title, duration, frame timestamps, model version, content hash, user
    metadata, and which window of which video it is). `video` overrides the video id (a live stream's
    id: its bytes are not known when its first window is indexed)."""
    vid = video or video_id(content_sha256, model_version)
    payload: dict[str, Any] = {
        KEY_SOURCE: source,
        KEY_TITLE: title if title is not None else Path(source).stem,
        KEY_DURATION: round(encoded.duration, 6),
        KEY_TIMESTAMPS: [round(float(t), 6) for t in encoded.frame_timestamps],
        KEY_MODEL_VERSION: model_version,
        KEY_CONTENT_HASH: content_sha256,
        KEY_VIDEO_ID: vid,
        KEY_WINDOW: encoded.window,
        KEY_NUM_WINDOWS: encoded.num_windows,
        KEY_WINDOW_START: round(encoded.window_start, 6),
        KEY_WINDOW_END: round(encoded.window_end or encoded.duration, 6),
    }
    if metadata:
        payload[KEY_METADATA] = dict(metadata)
    return IndexedVideo(
        id=window_id(vid, encoded.window),
        video=np.asarray(encoded.video, dtype=np.float32),
        frames=np.asarray(encoded.frames, dtype=np.float32),
        payload=payload,
    )
