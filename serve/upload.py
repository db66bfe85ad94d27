"""Stream a multipart upload to a staging file in chunks, hashing it on the way, under a size cap.

The body is parsed as it arrives (python-multipart's push parser over `request.stream()`), so no
upload is ever held in memory whole, an oversized one is refused as soon as it passes the cap, and
the sha256 (the video id's input) is ready when the last byte lands. Small text fields (title,
source, metadata, id) are collected alongside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
STAGED_PREFIX, STAGED_SUFFIX = "upload-", ".part"
STALE_AFTER_S = 3600.0  # staged files older than this were left by a crashed request
MAX_FIELD_BYTES = 64 * 1024  # per text field
MULTIPART_SLACK = 64 * 1024  # headers and boundaries on top of the file itself


class UploadError(Exception):
    """A bad upload; `status` 400 (malformed) or 413 (over the cap)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class StagedUpload:
    """A file part written to `path`, with its size, sha256 and the form's text fields."""

    path: Path
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


class _PartSink:
    """python-multipart callbacks: the file part goes to disk (hashed), text parts to memory."""

    def __init__(self, path: Path, max_bytes: int):
        self.staged = StagedUpload(path=path)
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.file: BinaryIO | None = None
        self.seen_file = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._text = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add("_header_name", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers, self._name, self._text = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.seen_file:
                raise UploadError(400, "bad_request", f"send exactly one '{FILE_FIELD}' part")
            self.seen_file = True
            filename = params.get(b"filename")
            self.staged.filename = Path(filename.decode("utf-8", "replace")).name if filename else None
            self.file = self.staged.path.open("wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.file is not None:
            self.staged.size += len(chunk)
            if self.staged.size > self.max_bytes:
                raise UploadError(
                    413, "too_large", f"upload is over the {self.max_bytes}-byte cap (max_upload_bytes)"
                )
            self.file.write(chunk)
            self.digest.update(chunk)
        elif self._name:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise UploadError(
                    400, "bad_request", f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes"
                )

    def _part_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        elif self._name:
            self.staged.fields[self._name] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a Content-Type header, else UploadError 400."""
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(
            400,
            "bad_request",
            f"expected multipart/form-data with a '{FILE_FIELD}' part, got {content_type!r}",
        )
    return params[b"boundary"]


async def stage_upload(
    stream: AsyncIterator[bytes],
    content_type: str | None,
    content_length: int | None,
    staging_dir: Path,
    max_bytes: int,
) -> StagedUpload:
    """Write the upload's `file` part to a new file in `staging_dir`; the caller deletes it.

    Raises UploadError: 413 when the declared or streamed size passes `max_bytes`, 400 for a body
    that is not multipart or has no file part. On error nothing is left in `staging_dir`.
    """
    boundary = boundary_of(content_type)
    if content_length is not None and content_length > max_bytes + MULTIPART_SLACK:
        raise UploadError(
            413, "too_large", f"upload of {content_length} bytes is over the {max_bytes}-byte cap"
        )
    staging_dir.mkdir(parents=True, exist_ok=True)
    sink = _PartSink(staging_dir / f"{STAGED_PREFIX}{uuid.uuid4().hex}{STAGED_SUFFIX}", max_bytes)
    parser = MultipartParser(boundary, sink.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
        if not sink.seen_file:
            raise UploadError(400, "bad_request", f"multipart body has no '{FILE_FIELD}' part")
    except MultipartParseError as e:
        sink.close()
        remove_quietly(sink.staged.path)
        raise UploadError(400, "bad_request", f"malformed multipart body: {e}") from e
    except BaseException:
        sink.close()
        remove_quietly(sink.staged.path)
        raise
    finally:
        sink.close()
    sink.staged.sha256 = sink.digest.hexdigest()
    return sink.staged


def remove_quietly(path: Path | str | None) -> None:
    """Delete a staging file if it is there."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale(
    directory: Path,
    older_than_s: float = STALE_AFTER_S,
    prefix: str = STAGED_PREFIX,
    suffix: str = STAGED_SUFFIX,
) -> int:
    """Delete temporary files left behind by a crashed process (older than `older_than_s`)."""
    if not directory.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for path in directory.glob(f"{prefix}*{suffix}"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
