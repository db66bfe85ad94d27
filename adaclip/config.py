"""Typed configuration: every YAML in configs/ and every CLI override is validated here once.

Unknown keys are errors (``extra="forbid"``) so a typo names its field instead of being ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from adaclip.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClipConfig(Strict):
    """Which CLIP: any open_clip model name plus a pretrained tag or a local checkpoint path."""

    name: str = "ViT-B-32"
    pretrained: str | None = Field(
        default=None,
        description="open_clip pretrained tag (e.g. 'openai') or a local checkpoint file; "
        "None means random initialisation (the tiny config trains from scratch).",
    )


class SelectorConfig(Strict):
    """AdaCLIP's frame selector ("policy"), SPEC section 2."""

    backbone: Literal["raw", "mobilenet_v3_large", "mobilenet_v2", "resnet50", "clip", "frozen_clip"] = (
        "mobilenet_v3_large"
    )
    backbone_weights: str | None = Field(
        default=None,
        description="torchvision weights: 'imagenet' or a local state_dict file; None = random init",
    )
    freeze_backbone: bool = True
    input_size: int = Field(
        default=224,
        ge=8,
        description="side of the selector's square view; by default 224 for CNN backbones (AdaCLIP's "
        "policy input) and 56 for raw pixels (AdaCLIP's --rescale_size)",
    )
    temporal: Literal["none", "transformer", "lstm", "bilstm"] = "transformer"
    hidden_dim: int = Field(default=512, ge=1)
    scorer: Literal["mlp", "linear"] = "mlp"
    mlp_hidden: int = Field(default=1024, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _view_size_by_backbone(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "input_size" not in data
            and data.get("backbone") in ("raw", "clip", "frozen_clip")
        ):
            return {**data, "input_size": 56}  # raw: AdaCLIP's rescale_size; clip backbones read embeddings
        return data

    @property
    def grayscale(self) -> bool:
        """The raw backbone reads grey pixels; CNN backbones read RGB."""
        return self.backbone == "raw"


class ModelConfig(Strict):
    """What the retrieval model computes (SPEC sections 2-5)."""

    clip: ClipConfig = ClipConfig()
    selector: SelectorConfig = SelectorConfig()
    selection: Literal["learned", "uniform", "all"] = Field(
        default="learned",
        description="learned: selector + Hard-Top-k; uniform: K evenly spaced of N; all: N frames",
    )
    num_frames: int = Field(default=16, ge=1, le=512)
    top_k: int = Field(default=12, ge=1)
    aggregation: Literal["mean", "mlp", "transformer", "reuse_scores", "qscore"] = "mlp"
    mean_normalize_frames: bool = Field(
        default=False, description="AdaCLIP's mean: normalise each frame first"
    )
    frame_agg_temp: float = Field(default=1.0, gt=0)
    qscore_temperature: float = Field(default=0.1, gt=0)
    qscore_variant: Literal["embedding", "scores"] = "embedding"
    sim_header: Literal["none", "seqTransf", "transformer"] = "none"
    word_agg: Literal["none", "mlp", "transformer"] = "none"
    word_agg_temp: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check_k(self) -> ModelConfig:
        if self.top_k > self.num_frames:
            raise ValueError(f"top_k={self.top_k} must be <= num_frames={self.num_frames}")
        if self.aggregation == "reuse_scores" and self.selection != "learned":
            raise ValueError(
                "aggregation=reuse_scores needs selection=learned (it reuses the selector's logits)"
            )
        return self

    @property
    def kept_frames(self) -> int:
        """Frames that reach the CLIP image encoder at inference."""
        return self.num_frames if self.selection == "all" else self.top_k


class DataConfig(Strict):
    """Where the videos and captions are and how frames are sampled (SPEC section 1)."""

    dataset: Literal["msrvtt", "didemo", "activitynet", "jsonl"] = "jsonl"
    annotations: Path = Path("data/synth/annotations.jsonl")
    video_root: Path = Path("data/synth")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    train_sampling: Literal["segment", "uniform", "random"] = "random"
    eval_sampling: Literal["segment", "uniform", "random"] = "segment"
    caption_mode: Literal["concat", "random", "all"] = "random"
    max_text_tokens: int = Field(default=32, ge=4, le=512)
    clip_size: int = Field(default=224, ge=8)
    cache_dir: Path | None = Field(
        default=None,
        description="decoded-frame store (decode once, stream every epoch); None decodes every epoch",
    )
    random_pool_factor: int = Field(
        default=4,
        ge=1,
        description="random sampling with a store: frames stored per video, in multiples of num_frames",
    )
    max_error_ratio: float = Field(
        default=0.05, ge=0, le=1, description="fail a job past this share of bad videos"
    )


class TrainConfig(Strict):
    """Optimisation and Ray Train resources (SPEC section 5)."""

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=32, ge=1, description="global batch size across all workers")
    eval_batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    coef_lr: float = Field(default=1e-3, gt=0, description="multiplier on lr for CLIP's own weights")
    weight_decay: float = Field(default=0.2, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_proportion: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float = Field(default=1.0, gt=0)
    init_tau: float = Field(default=5.0, gt=0)
    tau_decay: float = Field(default=0.045, ge=0)
    min_tau: float = Field(default=0.5, gt=0)
    k_warmup_epochs: int = Field(default=0, ge=0, description="K falls from N-1 to top_k over these epochs")
    distill_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of distilling query scoring into the video vector (adaclip.training)",
    )
    num_workers: int = Field(default=1, ge=1, description="Ray Train workers")
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    precision: Literal["fp32", "amp"] = "amp"
    decode_concurrency: int = Field(default=1, ge=1, description="Ray Data decode actors")
    seed: int = 0
    output_dir: Path = Path("runs/default")


MAX_RERANK_CANDIDATES = 2000  # rerank reads every candidate's frames: ~35 us each (benchmarks/NOTES.md)


class IndexConfig(Strict):
    """Where video vectors live: embedded Qdrant Edge on a directory (default) or a Qdrant server."""

    backend: Literal["edge", "server"] = "edge"
    path: Path = Path("data/index")
    url: str | None = Field(
        default=None, description="Qdrant server URL (or ':memory:' for tests); env QDRANT_URL"
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,  # never written out: not to checkpoints, manifests or Serve deployment args
        description="Qdrant API key for this process only; else env QDRANT_API_KEY (what replicas use)",
    )
    collection_prefix: str = "videos"
    rerank_candidates: int = Field(
        default=200,
        ge=1,
        le=MAX_RERANK_CANDIDATES,
        description="rerank prefetch: with 200, top 10 overlapped exact's by 97.5% (identical on 84%) at 8x fast's "
        "latency on a trained model (benchmarks/agreement_bench.py, README)",
    )
    timeout_s: float = Field(default=10.0, gt=0)
    frame_datatype: Literal["float32", "float16"] = Field(
        default="float32",
        description="how frame vectors are written (base64 in the payload, 4/3 of their bytes): float16 "
        "halves them (rerank reads them), rounding the scores; each point keeps the type it was written in",
    )
    frames_on_disk: bool = Field(
        default=False,
        description="the payload, which holds the frame vectors (K per point, most of the index's bytes), "
        "memory-mapped from disk and paged in as rerank reads it, instead of loaded into RAM: for libraries "
        "whose frames outgrow memory; the video vectors and their HNSW graph stay in RAM. Server: "
        "on_disk_payload of a collection created from then on (false: the server's default, which in "
        "Qdrant is on disk); Edge: applies to the segments written from then on",
    )
    shards: int = Field(default=1, ge=1, description="server: shards of a new collection (spread over nodes)")
    replication_factor: int = Field(default=1, ge=1, description="server: copies of each shard")
    write_consistency: int = Field(
        default=1, ge=1, description="server: replicas that must confirm a write before it is acknowledged"
    )
    window_seconds: float | None = Field(
        default=30.0,
        gt=0,
        description="a longer video is indexed as windows of this length, each its own point (the "
        "papers' clips, up to 30 s, stay one); null: one point per video. 30 s put the moment in the "
        "right clip 29% of the time against 16% for 60 s and 6% for one point (benchmarks/moment_bench.py)",
    )
    window_overlap_seconds: float = Field(default=0.0, ge=0, description="overlap of consecutive windows")

    @model_validator(mode="after")
    def _consistency_within_replicas(self) -> IndexConfig:
        if self.write_consistency > self.replication_factor:
            raise ValueError("index.write_consistency cannot exceed index.replication_factor")
        return self

    @model_validator(mode="after")
    def _overlap_below_window(self) -> IndexConfig:
        if self.window_seconds is not None and self.window_overlap_seconds >= self.window_seconds:
            raise ValueError("index.window_overlap_seconds must be below index.window_seconds")
        return self


class Config(Strict):
    """One experiment: model, data and training, as read from a YAML file in configs/."""

    name: str = "default"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    index: IndexConfig = IndexConfig()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML scalars (numbers, bools, null)."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. model.top_k=8)")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw else raw))
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply ``key=value`` overrides and validate once.

    Relative data paths in the file are resolved against the current directory, as users type them.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(tree).__name__}")
    return config_from_tree(tree, overrides, source=f"config {path or '(defaults)'}")


def config_from_tree(
    tree: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
) -> Config:
    """Validate a config mapping (e.g. one stored in a checkpoint) after applying overrides."""
    tree = copy.deepcopy(tree)
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    try:
        return absolute_paths(Config.model_validate(tree))
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid {source}: {fields}") from e


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def absolute_paths(cfg: Config) -> Config:
    """Resolve relative paths against the current directory once, where the user typed them.

    Ray workers run in other directories (Ray Train moves them into the run folder), so every
    path that travels with the config must already be absolute.
    """
    cfg = cfg.model_copy(deep=True)
    for section, name in (
        ("data", "annotations"),
        ("data", "video_root"),
        ("data", "cache_dir"),
        ("train", "output_dir"),
        ("index", "path"),
    ):
        value = getattr(getattr(cfg, section), name)
        if value is not None:
            setattr(getattr(cfg, section), name, Path(value).expanduser().resolve())
    tag = cfg.model.clip.pretrained
    if tag and not tag.startswith("hf-hub:") and ("/" in tag or tag.endswith(_CHECKPOINT_SUFFIXES)):
        cfg.model.clip.pretrained = str(Path(tag).expanduser().resolve())
    return cfg
