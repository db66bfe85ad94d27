"""Every error leaves the app as JSON `{"error": {"code", "message"}}` with the right status.

400 bad request, 404 unknown id, 409 a stream segment out of order, 413 too large, 415 not a
decodable video, 422 invalid fields, 507 disk full,
503 index unavailable (with Retry-After), 500 anything unexpected: the body says only "internal
error" and a request id (also in `X-Request-ID`); the detail (a Ray task error can hold pids,
node addresses and a traceback) goes to the log under that id, never to the client.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaclip.errors import IndexUnavailableError
from serve.streams import StreamError
from serve.upload import UploadError

log = logging.getLogger("ray.serve")
DEFAULT_RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error answer raised from a route: status, stable code, message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where or 'request'}: {err.get('msg')} (got {err.get('input')!r:.60})")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> None:
    """Register the JSON error answers on `app`."""

    def unavailable(message: str) -> JSONResponse:
        headers = {"Retry-After": str(retry_after_s)}
        return error_response(503, "index_unavailable", message, headers)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(UploadError)
    @app.exception_handler(StreamError)
    async def _refused(_: Request, exc: UploadError | StreamError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(IndexUnavailableError)
    async def _index_down(_: Request, exc: IndexUnavailableError) -> JSONResponse:
        return unavailable(str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1])

    @app.exception_handler(RayActorError)
    async def _replica_down(_: Request, exc: RayActorError) -> JSONResponse:
        return unavailable(f"a replica of the search service is restarting: {type(exc).__name__}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:16]
        log.error(
            "request %s: unhandled error on %s %s",
            request_id,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        message = f"internal error; request id {request_id} (the server log has the detail)"
        return error_response(500, "internal_error", message, {"X-Request-ID": request_id})
