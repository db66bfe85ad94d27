"""FastAPI ingress: the HTTP API of DESIGN.md in front of the encoder and index deployments.

Queries take one hop (ingress -> IndexService, which embeds the text and searches). Uploads are
streamed to a staging file while hashed; the content hash gives the id, so known bytes are answered
200 without decoding; new files are decoded and encoded by VideoEncoder (a staged path crosses the
hop, never a file object) and inserted by IndexService. Staging files are always removed, and a
failed request writes nothing.

Annotations are evaluated eagerly here (no `from __future__ import annotations`): FastAPI reads the
route signatures of the class that `@serve.ingress` rewrites.
"""

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from adaclip.encoding import KEY_CONTENT_HASH, content_hash, to_indexed
from adaclip.errors import IndexUnavailableError
from adaclip.index import KEY_DURATION, KEY_SOURCE, KEY_TIMESTAMPS, KEY_TITLE, video_id
from serve.http_errors import ApiError, install_error_handlers
from serve.media import MEDIA_TYPES, MediaStore, thumbnail_png
from serve.schemas import (
    MAX_K,
    AppArgs,
    ErrorResponse,
    HealthResponse,
    IngestPathRequest,
    Mode,
    SearchResponse,
    SearchResult,
    StatsResponse,
    VideoCreated,
    VideoDeleted,
    VideoRecord,
)
from serve.upload import FILE_FIELD, remove_quietly, remove_stale, stage_upload

app = FastAPI(
    title="AdaCLIP video search",
    version="1",
    description="Upload videos, then search them by text; each result carries the moment that matched.",
)
install_error_handlers(app)

SEARCH_PAGE = Path(__file__).with_name("static") / "index.html"
ERRORS = {s: {"model": ErrorResponse} for s in (400, 404, 413, 415, 422, 503)}
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


def check_finite(value: Any, where: str = "metadata") -> None:
    """422 for NaN or infinite numbers anywhere in `value` (JSON allows neither; the index rejects
    them only after a full encode)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, "invalid_request", f"{where} holds a non-finite number ({value})")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")


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
    check_finite(value)
    return value


@serve.deployment(name="SearchAPI", max_ongoing_requests=200, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class SearchAPI:
    """HTTP front door; holds handles to the encoder and index deployments."""

    def __init__(self, encoder: DeploymentHandle, index: DeploymentHandle, args: dict[str, Any]):
        self.encoder = encoder
        self.index = index
        self.args = AppArgs.model_validate(args)
        self._model_version: str | None = None
        self.media = MediaStore(self.args.media_dir)
        remove_stale(self.args.staging_dir)

    async def _call(self, response: Any) -> Any:
        """Await a deployment response, turning an unreachable index or replica into 503."""
        try:
            return await response
        except (IndexUnavailableError, RayActorError) as e:
            message = str(getattr(e, "cause", None) or e).strip().splitlines()[-1]
            raise ApiError(
                503, "index_unavailable", message, {"Retry-After": str(self.args.retry_after_s)}
            ) from e

    async def _version(self) -> str:
        if self._model_version is None:
            self._model_version = (await self._call(self.index.info.remote()))["model_version"]
        return self._model_version

    # ---- videos --------------------------------------------------------------------------------

    @app.post(
        "/videos", status_code=201, response_model=VideoCreated, responses=ERRORS, openapi_extra=UPLOAD_BODY
    )
    async def add_video(self, request: Request) -> JSONResponse:
        """Upload a video (multipart `file`, optional title, source, id, metadata), or index a file
        on the server by path (JSON `{"path": ...}`, below the configured ingest roots)."""
        if request.headers.get("content-type", "").startswith("application/json"):
            return await self._add_by_path(await request.body())
        length = request.headers.get("content-length")
        staged = await stage_upload(
            request.stream(),
            request.headers.get("content-type"),
            int(length) if length and length.isdigit() else None,
            self.args.staging_dir,
            self.args.max_upload_bytes,
        )
        try:
            fields = staged.fields
            name = staged.filename or "upload"
            metadata = parse_metadata(fields.get("metadata"))
            if fields.get("id"):
                metadata = {**(metadata or {}), "external_id": fields["id"]}
            if staged.size == 0:
                raise ApiError(415, "not_a_video", f"{name}: file is empty")
            return await self._ingest(
                staged.path, name, staged.sha256, fields.get("source") or name, fields.get("title"), metadata
            )
        finally:
            remove_quietly(staged.path)

    async def _add_by_path(self, body: bytes) -> JSONResponse:
        try:
            req = IngestPathRequest.model_validate_json(body)
        except ValidationError as e:
            raise ApiError(422, "invalid_request", str(e).replace("\n", " ")) from e
        path = Path(req.path).expanduser().resolve()
        if not any(path.is_relative_to(root) for root in self.args.ingest_roots):
            roots = ", ".join(map(str, self.args.ingest_roots)) or "none configured (ingest_roots)"
            raise ApiError(400, "path_not_allowed", f"{req.path} is not below an ingest root: {roots}")
        if not path.is_file():
            raise ApiError(404, "not_found", f"{req.path} does not exist on the server")
        check_finite(req.metadata)
        sha = await asyncio.to_thread(content_hash, path)
        return await self._ingest(path, req.path, sha, req.source or req.path, req.title, req.metadata)

    async def _ingest(
        self, path: Path, name: str, sha: str, source: str, title: str | None, metadata: dict | None
    ) -> JSONResponse:
        version = await self._version()
        vid = video_id(sha, version)
        stored = await self._call(self.index.get.remote(vid))
        if stored is not None:  # the same bytes are indexed: answer without decoding
            await asyncio.to_thread(self.media.keep, vid, path)
            return self._created(vid, False, stored["payload"])
        outcome = await self.encoder.encode.remote(str(path))
        if outcome.error is not None:
            raise ApiError(415, "not_a_video", f"{name}: not a decodable video ({outcome.error})")
        item = to_indexed(outcome.video, sha, version, source, title, metadata)
        created, payload = await self._call(self.index.add.remote(item))
        await asyncio.to_thread(self.media.keep, vid, path)  # after the index accepted it: no orphan file
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
        found = await self._call(self.index.get.remote(video_id))
        if found is None:
            raise ApiError(404, "not_found", f"no video with id {video_id!r}")
        return VideoRecord(**found)

    @app.delete("/videos/{video_id}", response_model=VideoDeleted, responses=ERRORS)
    async def delete_video(self, video_id: str) -> VideoDeleted:
        """Remove a video from the index."""
        if not await self._call(self.index.delete.remote(video_id)):
            raise ApiError(404, "not_found", f"no video with id {video_id!r}")
        self.media.remove(video_id)
        return VideoDeleted(id=video_id)

    def _media(self, video_id: str) -> Path:
        path = self.media.find(video_id)
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
        candidates: int | None = Query(None, ge=1, le=10000, description="rerank prefetch size"),
    ) -> SearchResponse:
        """Top-k videos for a text query, each with its score and best-matching moment (s)."""
        start = time.perf_counter()
        filters = parse_filters(source, title, filter)
        hits = await self._call(self.index.search.remote(q, k, mode, filters, candidates))
        results = [SearchResult(rank=i + 1, **hit) for i, hit in enumerate(hits)]
        took = (time.perf_counter() - start) * 1000
        return SearchResponse(query=q, mode=mode, k=k, took_ms=round(took, 3), results=results)

    # ---- operations ----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def home(self) -> HTMLResponse:
        """A one-page search UI over GET /search."""
        return HTMLResponse(SEARCH_PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz", response_model=HealthResponse, responses=ERRORS)
    async def healthz(self) -> HealthResponse:
        """200 when the index answers; 503 with Retry-After while it cannot be reached."""
        info = await self._call(self.index.health.remote())
        return HealthResponse(status="ok", model_version=info["model_version"], backend=info["backend"])

    @app.get("/stats", response_model=StatsResponse, responses=ERRORS)
    async def stats(self) -> StatsResponse:
        """Number of videos, backend, collection, dim and model version."""
        return StatsResponse(**await self._call(self.index.stats.remote()))
