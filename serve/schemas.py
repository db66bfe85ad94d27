"""Every schema of the Serve app: the typed application args and the HTTP request/response bodies.

`AppArgs` is what `build_app(args)` validates (from `configs/serve.yaml`'s `args`, or from
`adaclip serve`); the rest is the HTTP API of DESIGN.md, published in the OpenAPI document at /docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adaclip.checkpoint import CHECKPOINT_KEY

Mode = Literal["fast", "rerank", "exact"]
MAX_K = 1000
MAX_TEXT = 4096  # title, source, id


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- application args -----------------------------------------------------------------------


class AppArgs(Strict):
    """Arguments of the Serve application (`build_app`); paths are made absolute when validated."""

    config: Path | None = Field(default=None, description="YAML config (configs/*.yaml); defaults when None")
    checkpoint: Path | None = Field(
        default=None,
        description="model checkpoint (file or run dir); also `model.checkpoint=PATH` in overrides",
    )
    overrides: list[str] = Field(
        default_factory=list, description="key=value config overrides, e.g. index.path=DIR"
    )
    seed: int = Field(
        default=0, description="seed of a random-init model, so every replica builds the same weights"
    )
    staging_dir: Path = Field(
        default=Path("data/staging"),
        description="uploads are streamed here; must be shared by ingress and encoders",
    )
    media_dir: Path = Field(
        default=Path("data/media"),
        description="indexed videos' files, for playback and thumbnails; shared by ingress replicas",
    )
    streams_dir: Path = Field(
        default=Path("data/streams"),
        description="live streams' segments and state (durable); shared by ingress replicas",
    )
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="larger uploads get 413")
    ingest_roots: list[Path] = Field(
        default_factory=list,
        description="server-side directories POST /videos may read by path (none: disabled)",
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of 503 answers")
    api_key_env: str | None = Field(
        default=None,
        description="name of an environment variable holding the key the write routes (POST, DELETE) "
        "require in the X-API-Key header; None leaves writes open (the demo)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="other origins (scheme://host:port) whose pages may write; a browser request from "
        "any other site is 403 (no cross-site uploads)",
    )

    @field_validator("config", "checkpoint", "staging_dir", "media_dir", "streams_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("ingest_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]

    def split_checkpoint(self) -> AppArgs:
        """Move a `model.checkpoint=PATH` override into `checkpoint` (ModelConfig has no such field)."""
        rest, checkpoint = [], self.checkpoint
        for item in self.overrides:
            key, _, value = item.partition("=")
            if key.strip() == CHECKPOINT_KEY:
                checkpoint = Path(value).expanduser().resolve() if value else None
            else:
                rest.append(item)
        return self.model_copy(update={"overrides": rest, "checkpoint": checkpoint})


class ModelSpec(Strict):
    """What a replica needs to build the model: the validated config (as JSON) and the weights."""

    config: dict[str, Any]
    checkpoint: str | None = None
    seed: int = 0


class BatchConfig(Strict):
    """`user_config` of the batched deployments (defaults in their `@serve.deployment`, overrides in
    the Serve config's `deployments:`): applied live through `reconfigure`. There is no batch wait:
    a batch is what queued while the previous one ran (serve/batching.py)."""

    max_batch_size: int = Field(ge=1)


# ---- HTTP bodies ------------------------------------------------------------------------------


class ReindexRequest(Strict):
    checkpoint: Path | None = Field(description="the new model's checkpoint, on the serving machines")
    seed: int = Field(default=0, description="seed of a random-init model (no checkpoint)")
    allow_missing: bool = Field(
        default=False, description="switch even if some videos cannot be re-encoded (they are left out)"
    )


class ReindexStatus(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    checkpoint: str | None = None
    from_version: str | None = None
    to: str | None = None
    collection: str | None = None
    copied: int | None = None
    present: int | None = None
    removed: int | None = None
    missing: dict[str, str] | None = None
    error: str | None = None
    started: float | None = None


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine code, e.g. not_a_video, too_large, not_found")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class IngestPathRequest(Strict):
    """JSON body of POST /videos for a file already on the server (below one of `ingest_roots`)."""

    path: str = Field(min_length=1, max_length=4096)
    title: str | None = Field(default=None, max_length=MAX_TEXT)
    source: str | None = Field(default=None, max_length=MAX_TEXT)
    metadata: dict[str, Any] | None = None


class StreamOpen(Strict):
    """JSON body of POST /streams."""

    title: str | None = Field(default=None, max_length=MAX_TEXT)
    metadata: dict[str, Any] | None = None


class IndexedWindow(BaseModel):
    window: int
    delay_s: float = Field(description="from the acknowledgement of the segment that completed it")


class StreamInfo(BaseModel):
    """A live stream: what has arrived and what is searchable."""

    id: str = Field(description="also the video id its windows are found under")
    title: str | None
    ended: bool
    segments: int
    duration: float = Field(description="seconds received")
    next_start: float = Field(description="where the next segment must start")
    indexed: list[IndexedWindow]


class VideoCreated(BaseModel):
    """Answer of POST /videos: 201 when the video is new, 200 when the same bytes were indexed."""

    id: str
    created: bool
    content_hash: str
    source: str | None = None
    title: str | None = None
    duration: float | None = None
    frame_timestamps: list[float] | None = None


class WindowSpan(BaseModel):
    """One window of a video (a video up to `index.window_seconds` long is one window)."""

    index: int
    start: float = Field(description="seconds into the video")
    end: float
    point_id: str


class VideoRecord(BaseModel):
    """GET /videos/{id}: window 0's payload and every window."""

    id: str
    payload: dict[str, Any]
    num_frames: int
    windows: list[WindowSpan]


class VideoDeleted(BaseModel):
    id: str
    deleted: bool = True


class SearchResult(BaseModel):
    rank: int
    id: str
    score: float
    moment: float | None = Field(description="seconds into the video of the best-matching kept frame")
    frame_index: int | None = Field(description="which stored frame vector matched best")
    window: WindowSpan = Field(description="the window the moment lies in")
    payload: dict[str, Any]


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    took_ms: float
    results: list[SearchResult]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_version: str
    backend: str


class StatsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    count: int = Field(description="videos")
    points: int = Field(description="windows: one point each")
    backend: str
    collection: str
    dim: int
    model_version: str
