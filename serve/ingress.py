"""FastAPI ingress: the HTTP API of DESIGN.md, holding the index and in front of the encoder.

A query is answered in this replica (no hop after the proxy): its IndexService embeds the text and
searches. Uploads are streamed to a staging file while hashed (a file named by path is copied there
the same way); the content hash gives the id, so known bytes are answered 200 without decoding; new
files are decoded and encoded by the VideoEncoder deployment (a staged path crosses the hop, never
a file object) and inserted here, their media committed in two phases around the index write
(serve.media). With the embedded Edge index this deployment has one replica (the shard's owner);
against a Qdrant server it scales like any stateless ingress. Staging
files are always removed, and a failed request writes nothing. Write routes refuse cross-site
browser requests and, when `api_key_env` is set, requests without the key.

Annotations are evaluated eagerly here (no `from __future__ import annotations`): FastAPI reads the
route signatures of the class that `@serve.ingress` rewrites.
"""

import asyncio
import contextlib
import hmac
import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from adaclip.config import MAX_RERANK_CANDIDATES
from adaclip.encoding import KEY_CONTENT_HASH, to_indexed
from adaclip.errors import (
    ConfigError,
    IndexBusyError,
    IndexUnavailableError,
    ModelChangedError,
    VideoDecodeError,
)
from adaclip.index import KEY_DURATION, KEY_SOURCE, KEY_TIMESTAMPS, KEY_TITLE, video_id
from adaclip.index.base import canonical_id
from adaclip.video.probe import probe_video
from serve.encoder import EncodeOutcome
from serve.http_errors import ApiError, install_error_handlers, log
from serve.index_service import TEXT_BATCH, IndexService
from serve.media import MEDIA_TYPES, MediaStore, thumbnail_png
from serve.schemas import (
    MAX_K,
    MAX_TEXT,
    AppArgs,
    BatchConfig,
    ErrorResponse,
    HealthResponse,
    IndexedWindow,
    IngestPathRequest,
    Mode,
    ReindexRequest,
    ReindexStatus,
    SearchResponse,
    SearchResult,
    StatsResponse,
    StreamInfo,
    StreamOpen,
    VideoCreated,
    VideoDeleted,
    VideoRecord,
)
from serve.streams import Stream, StreamError, StreamStore
from serve.upload import (
    FILE_FIELD,
    StagedUpload,
    has_control_chars,
    read_capped,
    remove_quietly,
    remove_stale,
    stage_path,
    stage_upload,
)

app = FastAPI(
    title="AdaCLIP video search",
    version="1",
    description="Upload videos, then search them by text; each result carries the moment that matched.",
)
install_error_handlers(app)

SEARCH_PAGE = Path(__file__).with_name("static") / "index.html"
ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 415, 422, 503, 507)}
MAX_JSON_BYTES = 64 * 1024  # a JSON request body (ingest by path)
MAX_METADATA_DEPTH = 8  # nesting of objects and lists in metadata
DEFAULT_STREAM_WINDOW_S = 60.0  # a stream's window when the index does not cut videos into windows
UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {"type": "string", "format": "binary"},
                        "title": {"type": "string"},
                        "source": {"type": "string"},
                        "id": {"type": "string", "description": "your own id, stored as payload external_id"},
                        "metadata": {"type": "string", "description": "a JSON object stored in the payload"},
                    },
                }
            },
            "application/json": {"schema": IngestPathRequest.model_json_schema()},
        },
        "required": True,
    }
}


BodyModel = TypeVar("BodyModel", bound=BaseModel)
FILTER_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def parse_filters(source: str | None, title: str | None, extra: list[str]) -> dict[str, str]:
    """Exact-match payload filters from `source=`, `title=` and repeated `filter=key:value`; a key
    is a payload field name (letters, digits, `_`, `-`, `.` for nested fields, at most 64)."""
    filters = {k: v for k, v in ((KEY_SOURCE, source), (KEY_TITLE, title)) if v is not None}
    for item in extra:
        key, sep, value = item.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ApiError(422, "invalid_request", f"filter must look like key:value, got {item!r:.80}")
        if not FILTER_KEY.fullmatch(key):
            raise ApiError(
                422, "invalid_request", f"filter key must be a payload field name, got {key!r:.80}"
            )
        filters[key] = value
    return filters


def check_text(value: str | None, where: str) -> None:
    """422 for an over-long text field or one holding NUL or other control characters."""
    if value is not None and (len(value) > MAX_TEXT or has_control_chars(value)):
        raise ApiError(
            422,
            "invalid_request",
            f"{where} must be at most {MAX_TEXT} characters without control characters",
        )


def check_metadata(value: Any, where: str = "metadata", depth: int = 0) -> None:
    """422 for what the index would reject only after a full encode, or should not store: NaN or
    infinite numbers, nesting deeper than MAX_METADATA_DEPTH, NUL bytes in keys or strings."""
    if depth > MAX_METADATA_DEPTH:
        raise ApiError(422, "invalid_request", f"{where} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, "invalid_request", f"{where} holds a non-finite number ({value})")
    if isinstance(value, str) and "\0" in value:
        raise ApiError(422, "invalid_request", f"{where} holds a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\0" in key:
                raise ApiError(422, "invalid_request", f"{where} has a key with a NUL character")
            check_metadata(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_metadata(item, f"{where}[{i}]", depth + 1)


def authorize_write(headers: Mapping[str, str], allowed_origins: list[str], api_key: bytes | None) -> None:
    """403 for a browser request from another site (a page cannot upload or delete on a visitor's
    behalf: browsers send Origin, and a form cannot set X-API-Key); 401 without the API key when
    one is configured."""
    origin = headers.get("origin")
    cross_site = origin is not None and urlsplit(origin).netloc != headers.get("host")
    if cross_site and origin not in allowed_origins:
        raise ApiError(403, "forbidden", f"cross-site writes are refused (Origin {origin!r:.100})")
    if api_key is not None and not hmac.compare_digest(headers.get("x-api-key", "").encode(), api_key):
        raise ApiError(401, "unauthorized", "this route needs the X-API-Key header")


def parse_body(model: type[BodyModel], body: bytes) -> BodyModel:
    """A JSON request body as `model`, else 422 naming the fields."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", str(e).replace("\n", " ")) from e


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise ApiError(422, "invalid_request", f"metadata must be a JSON object: {e}") from e
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", f"metadata must be a JSON object, got {type(value).__name__}")
    check_metadata(value)
    return value


@serve.deployment(
    name="SearchAPI",
    max_ongoing_requests=200,
    max_queued_requests=1000,
    backpressure_config={"status_code": 503, "retry_after_s": 5},
    ray_actor_options={"num_cpus": 0.5},
    user_config={"max_batch_size": TEXT_BATCH},  # most queries per text-encoder call
)
@serve.ingress(app)
class SearchAPI:
    """HTTP front door and the index's owner; a handle to the encoder deployment."""

    def __init__(self, encoder: DeploymentHandle, spec: dict[str, Any], args: dict[str, Any]):
        self.encoder = encoder
        self.args = AppArgs.model_validate(args)
        self._api_key = self._read_api_key(self.args.api_key_env)
        self.media = MediaStore(self.args.media_dir)
        self.streams = StreamStore(self.args.streams_dir)
        self.index = IndexService(spec, self.media, self.streams)
        self._stream_locks: dict[str, asyncio.Lock] = {}
        self._stream_tasks: set[asyncio.Task] = set()
        self._reconciled = False
        self._reconcile_lock = asyncio.Lock()
        remove_stale(self.args.staging_dir)

    @staticmethod
    def _read_api_key(env: str | None) -> bytes | None:
        if env is None:
            return None
        key = os.environ.get(env, "")
        if not key:
            raise ConfigError(f"api_key_env={env}: the environment variable {env} is not set (or empty) here")
        return key.encode()

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply `user_config` live (Serve calls this on start and on config change)."""
        self.index.set_max_batch_size(BatchConfig.model_validate(user_config or {}).max_batch_size)

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown: release the index for the next owner."""
        if hasattr(self, "index"):
            self.index.close()

    async def _call(self, response: Any) -> Any:
        """Await the index or an encoder response; an unreachable index or replica, a full queue
        or a busy bounded path is 503 with Retry-After."""
        try:
            return await response
        except (IndexUnavailableError, IndexBusyError, BackPressureError, RayActorError) as e:
            code = "index_unavailable" if isinstance(e, IndexUnavailableError | RayActorError) else "busy"
            message = str(getattr(e, "cause", None) or e).strip().splitlines()[-1]
            raise ApiError(503, code, message, {"Retry-After": str(self.args.retry_after_s)}) from e

    async def _encode(self, call: Any, *args: Any) -> EncodeOutcome:
        """An encoder call with the index's active model; ModelChangedError (503) when the model
        that encoded is not the one the caller's ids were made for (the index moved meanwhile)."""
        info = self.index.info()
        outcome = await self._call(call.remote(*args, active=info["active"]))
        if outcome.error is None and outcome.model_version != info["model_version"]:
            raise ModelChangedError("the index is moving to another model; retry")
        return outcome

    def _version(self) -> str:
        return self.index.info()["model_version"]

    async def _settle_media(self) -> None:
        """Once per replica, before media is read or written: settle what a crash left pending."""
        if self._reconciled:
            return
        async with self._reconcile_lock:
            if not self._reconciled:

                async def is_indexed(vid: str) -> bool:
                    return await self._call(self.index.get(vid)) is not None

                await self.media.reconcile(is_indexed)
                for stream_id in await asyncio.to_thread(self.streams.ids):
                    await self._index_stream(stream_id)  # windows completed before a restart
                self._reconciled = True

    # ---- videos --------------------------------------------------------------------------------

    @app.post(
        "/videos", status_code=201, response_model=VideoCreated, responses=ERRORS, openapi_extra=UPLOAD_BODY
    )
    async def add_video(self, request: Request) -> JSONResponse:
        """Upload a video (multipart `file`, optional title, source, id, metadata), or index a file
        on the server by path (JSON `{"path": ...}`, below the configured ingest roots)."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        await self._settle_media()
        if request.headers.get("content-type", "").startswith("application/json"):
            req = self._path_request(await read_capped(request.stream(), MAX_JSON_BYTES))
            staged = await asyncio.to_thread(
                stage_path,
                Path(req.path).expanduser().resolve(),
                self.args.ingest_roots,
                self.args.staging_dir,
                self.args.max_upload_bytes,
            )
            source, title, metadata = req.source or req.path, req.title, req.metadata
        else:
            staged = await self._stage(request)
            source, title, metadata = None, None, None
        try:
            if staged.fields:
                fields = staged.fields
                for key in ("title", "source", "id"):
                    check_text(fields.get(key), key)
                metadata = parse_metadata(fields.get("metadata"))
                if fields.get("id"):
                    metadata = {**(metadata or {}), "external_id": fields["id"]}
                source, title = fields.get("source"), fields.get("title")
            return await self._ingest(staged, source or staged.filename or "upload", title, metadata)
        finally:
            remove_quietly(staged.path)

    async def _stage(self, request: Request) -> StagedUpload:
        """The request's multipart body streamed to staging under the upload cap."""
        length = request.headers.get("content-length")
        return await stage_upload(
            request.stream(),
            request.headers.get("content-type"),
            int(length) if length and length.isdigit() else None,
            self.args.staging_dir,
            self.args.max_upload_bytes,
        )

    @staticmethod
    def _path_request(body: bytes) -> IngestPathRequest:
        req = parse_body(IngestPathRequest, body)
        for key in ("path", "title", "source"):
            check_text(getattr(req, key), key)
        check_metadata(req.metadata)
        return req

    async def _ingest(
        self, staged: StagedUpload, source: str, title: str | None, metadata: dict | None
    ) -> JSONResponse:
        name = staged.filename or "upload"
        if staged.size == 0:
            raise ApiError(415, "not_a_video", f"{name}: file is empty")
        version = self._version()
        vid = video_id(staged.sha256, version)
        stored = await self._call(self.index.get(vid))
        if stored is not None and self.media.find(vid) is not None:
            return self._created(vid, False, stored["payload"])  # the same bytes are indexed
        windows = None
        if stored is None:  # new bytes: decode and encode
            outcome = await self._encode(self.encoder.encode, str(staged.path))
            if outcome.error is not None:
                raise ApiError(415, "not_a_video", f"{name}: not a decodable video ({outcome.error})")
            windows = [
                to_indexed(w, staged.sha256, version, source, title, metadata) for w in outcome.windows
            ]
        pending = await asyncio.to_thread(self.media.prepare, vid, staged.path)  # a full disk: 507, no point
        try:
            if windows is not None:
                created, payload = await self._call(self.index.add(windows))
            else:
                created, payload = False, stored["payload"]
        except BaseException:
            self.media.discard(pending)
            raise
        await asyncio.to_thread(self.media.commit, pending)
        return self._created(vid, created, payload)

    @staticmethod
    def _created(vid: str, created: bool, payload: dict[str, Any]) -> JSONResponse:
        body = VideoCreated(
            id=vid,
            created=created,
            content_hash=payload.get(KEY_CONTENT_HASH, ""),
            source=payload.get(KEY_SOURCE),
            title=payload.get(KEY_TITLE),
            duration=payload.get(KEY_DURATION),
            frame_timestamps=payload.get(KEY_TIMESTAMPS),
        )
        return JSONResponse(body.model_dump(), status_code=201 if created else 200)

    @app.get("/videos/{video_id}", response_model=VideoRecord, responses=ERRORS)
    async def get_video(self, video_id: str) -> VideoRecord:
        """A stored video's payload (source, title, duration, frame timestamps, ...)."""
        found = await self._call(self.index.get(video_id))
        if found is None:
            raise ApiError(404, "not_found", f"no video with id {video_id!r}")
        return VideoRecord(**found)

    @app.delete("/videos/{video_id}", response_model=VideoDeleted, responses=ERRORS)
    async def delete_video(self, video_id: str, request: Request) -> VideoDeleted:
        """Remove a video from the index, and its file."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        await self._settle_media()
        withdrawn = self.media.withdraw(video_id)  # not served from now; back if nothing is deleted
        deleted = False
        try:
            deleted = await self._call(self.index.delete(video_id))
        finally:
            if withdrawn is not None:
                (self.media.discard if deleted else self.media.commit)(withdrawn)
        if not deleted:
            raise ApiError(404, "not_found", f"no video with id {video_id!r}")
        with contextlib.suppress(StreamError):
            await asyncio.to_thread(self.streams.remove, video_id)
        return VideoDeleted(id=video_id)

    def _media(self, video_id: str) -> Path:
        path = self.media.find(video_id)
        if path is None and canonical_id(video_id) is not None:
            path = self.streams.media(video_id)  # a live stream: what has arrived so far
        if path is None:
            raise ApiError(404, "not_found", f"no stored file for video {video_id!r}")
        return path

    @app.get("/videos/{video_id}/media", responses=ERRORS)
    async def get_media(self, video_id: str) -> FileResponse:
        """The video file itself (range requests supported), for playback from a moment: always a
        video type chosen by the server, never sniffed by the browser."""
        path = self._media(video_id)
        return FileResponse(
            path, media_type=MEDIA_TYPES[path.suffix], headers={"X-Content-Type-Options": "nosniff"}
        )

    @app.get("/videos/{video_id}/thumbnail", responses=ERRORS)
    async def get_thumbnail(
        self,
        video_id: str,
        t: float = Query(0.0, ge=0, le=1e7, allow_inf_nan=False, description="seconds into the video"),
    ) -> Response:
        """A PNG of the frame at `t` seconds (the search page shows the best-matching moment)."""
        png = await asyncio.to_thread(thumbnail_png, self._media(video_id), t)
        return Response(png, media_type="image/png")

    # ---- search --------------------------------------------------------------------------------

    @app.get("/search", response_model=SearchResponse, responses=ERRORS)
    async def search(
        self,
        q: str = Query(..., min_length=1, max_length=1000, description="text query"),
        k: int = Query(10, ge=1, le=MAX_K, description="number of results"),
        mode: Mode = Query("rerank", description="fast: video vector; rerank: + query scoring; exact: all"),
        source: str | None = Query(None, description="only videos with this payload source"),
        title: str | None = Query(None, description="only videos with this payload title"),
        filter: list[str] = Query([], description="more exact payload filters, key:value (repeatable)"),
        candidates: int | None = Query(
            None, ge=1, le=MAX_RERANK_CANDIDATES, description="rerank prefetch size (windows)"
        ),
        group: bool = Query(True, description="one result per video (its best window); false: windows"),
    ) -> SearchResponse:
        """Top-k videos for a text query, each with its score, best-matching window and moment (s)."""
        start = time.perf_counter()
        filters = parse_filters(source, title, filter)
        hits = await self._call(self.index.search(q, k, mode, filters, candidates, group))
        results = [SearchResult(rank=i + 1, **hit) for i, hit in enumerate(hits)]
        took = (time.perf_counter() - start) * 1000
        return SearchResponse(query=q, mode=mode, k=k, took_ms=round(took, 3), results=results)

    # ---- live streams ----------------------------------------------------------------------------

    @app.post("/streams", status_code=201, response_model=StreamInfo, responses=ERRORS)
    async def open_stream(self, request: Request) -> JSONResponse:
        """Open a live stream (JSON `{"title", "metadata"}`, both optional); its id is also the
        video id its windows are searchable under."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        req = parse_body(StreamOpen, await read_capped(request.stream(), MAX_JSON_BYTES) or b"{}")
        check_text(req.title, "title")
        check_metadata(req.metadata)
        stream = await asyncio.to_thread(self.streams.create, req.title, req.metadata)
        return JSONResponse((await self._stream_info(stream)).model_dump(), status_code=201)

    @app.post(
        "/streams/{stream_id}/segments", response_model=StreamInfo, responses={**ERRORS, 409: ERRORS[400]}
    )
    async def add_segment(
        self,
        stream_id: str,
        request: Request,
        start: float = Query(..., ge=0, le=1e7, allow_inf_nan=False, description="seconds into the stream"),
    ) -> JSONResponse:
        """Append a segment (multipart `file`: a few seconds of MPEG-TS or fragmented MP4) that
        starts where the last one ended: 201 once it is durable, 200 for a retry of a stored one,
        409 with the expected start otherwise. Each completed window is then indexed."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        await self._settle_media()
        staged = await self._stage(request)
        try:
            if staged.size == 0:
                raise ApiError(415, "not_a_video", "segment is empty")
            try:
                info = await asyncio.to_thread(probe_video, staged.path)
            except VideoDecodeError as e:
                raise ApiError(415, "not_a_video", f"segment is not a decodable video ({e.reason})") from e
            stream, retry = await asyncio.to_thread(
                self.streams.append, stream_id, staged.path, start, info.duration, staged.sha256
            )
        finally:
            remove_quietly(staged.path)
        self._index_later(stream.id)
        return JSONResponse((await self._stream_info(stream)).model_dump(), status_code=200 if retry else 201)

    @app.post("/streams/{stream_id}/end", response_model=StreamInfo, responses=ERRORS)
    async def end_stream(self, stream_id: str, request: Request) -> StreamInfo:
        """End a stream: its last window is indexed before this answers."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        await self._settle_media()
        stream = await asyncio.to_thread(self.streams.end, stream_id)
        await self._index_stream(stream.id)
        return await self._stream_info(await asyncio.to_thread(self.streams.get, stream.id))

    @app.get("/streams/{stream_id}", response_model=StreamInfo, responses=ERRORS)
    async def get_stream(self, stream_id: str) -> StreamInfo:
        """What has arrived, what is searchable, and each window's delay to searchable."""
        return await self._stream_info(await asyncio.to_thread(self.streams.get, stream_id))

    def _window_seconds(self) -> float:
        return self.index.info().get("window_seconds") or DEFAULT_STREAM_WINDOW_S

    async def _stream_info(self, stream: Stream) -> StreamInfo:
        delays = stream.delays(self._window_seconds())
        return StreamInfo(
            id=stream.id,
            title=stream.title,
            ended=stream.ended,
            segments=len(stream.segments),
            duration=stream.duration,
            next_start=stream.duration,
            indexed=[IndexedWindow(window=w, delay_s=round(d, 4)) for w, d in sorted(delays.items())],
        )

    def _index_later(self, stream_id: str) -> None:
        """Index the stream's completed windows in the background (the segment is already durable;
        a failure here is retried on the next segment and after a restart)."""
        task = asyncio.get_running_loop().create_task(self._index_stream(stream_id, background=True))
        self._stream_tasks.add(task)
        task.add_done_callback(self._stream_tasks.discard)

    async def _index_stream(self, stream_id: str, background: bool = False) -> None:
        """Encode and index every complete, unindexed window of a stream, in order. In the
        background a failure is logged (retried on the next segment, or after a restart);
        otherwise (end of stream, restart) it reaches the caller."""
        async with self._stream_locks.setdefault(stream_id, asyncio.Lock()):
            try:
                stream = await asyncio.to_thread(self.streams.get, stream_id)
                version, window_s = self._version(), self._window_seconds()
                for w, segments in sorted(stream.complete_windows(window_s).items()):
                    await self._index_window(stream, w, segments, version)
            except Exception:
                if not background:
                    raise
                log.exception(
                    "stream %s: indexing its windows failed; retried on the next segment", stream_id
                )

    async def _index_window(self, stream: Stream, window: int, segments: list, version: str) -> None:
        path = await asyncio.to_thread(self.streams.window_file, stream, segments, self.args.staging_dir)
        try:
            outcome = await self._encode(self.encoder.encode_window, str(path), segments[0].start, window)
        finally:
            remove_quietly(path)
        if outcome.error is not None:  # its segments probed as video: log it, do not retry forever
            log.error("stream %s window %d does not decode: %s", stream.id, window, outcome.error)
        else:
            source = stream.title or f"stream {stream.id}"
            item = to_indexed(
                outcome.windows[0],
                f"stream:{stream.id}",
                version,
                source,
                stream.title,
                stream.metadata,
                stream.id,
            )
            await self._call(self.index.add([item]))
        await asyncio.to_thread(self.streams.mark_indexed, stream.id, window)

    # ---- operations ----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def home(self) -> HTMLResponse:
        """A one-page search UI over GET /search."""
        return HTMLResponse(SEARCH_PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz", response_model=HealthResponse, responses=ERRORS)
    async def healthz(self) -> HealthResponse:
        """200 when the index answers; 503 with Retry-After while it cannot be reached."""
        info = await self._call(self.index.health())
        await self._settle_media()
        return HealthResponse(status="ok", model_version=info["model_version"], backend=info["backend"])

    @app.post("/admin/reindex", status_code=202, response_model=ReindexStatus, responses=ERRORS)
    async def start_reindex(self, request: Request) -> ReindexStatus:
        """Move the index to the model of a checkpoint (`adaclip reindex`): every stored video is
        re-encoded from its kept file into the new model's collection while this one keeps
        serving, then searches and uploads switch in one step. Poll GET /admin/reindex."""
        authorize_write(request.headers, self.args.allowed_origins, self._api_key)
        req = parse_body(ReindexRequest, await read_capped(request.stream(), MAX_JSON_BYTES))
        checkpoint = str(req.checkpoint.expanduser().resolve()) if req.checkpoint else None
        if checkpoint is not None and not Path(checkpoint).exists():
            raise ApiError(422, "invalid_request", f"checkpoint {req.checkpoint} does not exist")
        await self._settle_media()
        return ReindexStatus(**await self._call(self.index.reindex(checkpoint, req.seed, req.allow_missing)))

    @app.get("/admin/reindex", response_model=ReindexStatus, responses=ERRORS)
    async def reindex_status(self) -> ReindexStatus:
        """The last reindex of this index: idle, running, done (with counts) or failed (why)."""
        return ReindexStatus(**self.index.reindex_status())

    @app.get("/stats", response_model=StatsResponse, responses=ERRORS)
    async def stats(self) -> StatsResponse:
        """Number of videos, backend, collection, dim and model version."""
        return StatsResponse(**await self._call(self.index.stats()))
