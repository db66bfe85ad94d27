"""Stage what a client sends (a multipart upload, or a server-side file named by path) as one file
in the staging directory, hashed on the way, under one size cap.

The body is parsed as it arrives (python-multipart's push parser over `request.stream()`), so no
upload is ever held in memory whole, an oversized one is refused as soon as it passes the cap
(every byte of the body counts, declared or chunked), and the sha256 (the video id's input) is
ready when the last byte lands. Only the API's form fields are accepted. A file named by path is
opened once, component by component without following links, so a symlink swapped in after the
check cannot lead outside the allowed roots; it is then copied like an upload. A full disk is 507
and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
TEXT_FIELDS = ("title", "source", "id", "metadata")
STAGED_PREFIX, STAGED_SUFFIX = "upload-", ".part"
STALE_AFTER_S = 3600.0  # staged files older than this were left by a crashed request
MAX_FIELD_BYTES = 64 * 1024  # per text field
MULTIPART_SLACK = 64 * 1024  # part headers and boundaries on top of the file itself
MAX_BOUNDARY = 70  # RFC 2046
COPY_CHUNK = 1 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class UploadError(Exception):
    """A bad upload: 400 (malformed), 413 (over the cap), 422 (unknown field), 507 (disk full)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def too_large(max_bytes: int, what: str = "upload") -> UploadError:
    return UploadError(413, "too_large", f"{what} is over the {max_bytes}-byte cap (max_upload_bytes)")


@contextlib.contextmanager
def disk_full_is_507() -> Iterator[None]:
    """Turn a full disk (or quota) into UploadError 507; any other OSError passes through."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise UploadError(
            507, "insufficient_storage", f"the server is out of disk space ({e.strerror})"
        ) from e


def has_control_chars(text: str) -> bool:
    """NUL and other C0 controls have no place in a name or a title."""
    return any(ord(c) < 32 and c not in "\t" for c in text)


@dataclass
class StagedUpload:
    """A file written to `path`, with its size, sha256 and the form's text fields."""

    path: Path
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def staged_path(staging_dir: Path) -> Path:
    """A new staging file name that records its writer (host, pid), so a restart can tell the files
    of a dead process from those of a live one."""
    return (
        staging_dir / f"{STAGED_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}{STAGED_SUFFIX}"
    )


def _create(path: Path) -> BinaryIO:
    """Open a new staging file (a seam for tests that inject a full disk)."""
    return path.open("xb")


class _Writer:
    """Writes, hashes and counts one staged file under the cap; a full disk becomes UploadError 507."""

    def __init__(self, path: Path, max_bytes: int):
        self.staged = StagedUpload(path=path)
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.file: BinaryIO | None = None

    def open(self) -> None:
        with disk_full_is_507():
            self.file = _create(self.staged.path)

    def write(self, chunk: bytes) -> None:
        self.staged.size += len(chunk)
        if self.staged.size > self.max_bytes:
            raise too_large(self.max_bytes)
        with disk_full_is_507():
            self.file.write(chunk)
        self.digest.update(chunk)

    def finish(self) -> StagedUpload:
        self.close()
        self.staged.sha256 = self.digest.hexdigest()
        return self.staged

    def close(self) -> None:
        """Close the file; what the OS reports only now (a full disk) still counts."""
        file, self.file = self.file, None
        if file is not None:
            with disk_full_is_507():
                file.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, UploadError):
            self.close()
        remove_quietly(self.staged.path)


class _PartSink:
    """python-multipart callbacks: the file part goes to disk (hashed), the API's text fields to
    memory; any other field name, a second file or a body without its closing boundary is refused."""

    def __init__(self, writer: _Writer):
        self.writer = writer
        self.seen_file = False
        self.ended = False
        self.in_file = False
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
            "on_end": self._end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        value = getattr(self, attr) + data
        if len(value) > MULTIPART_SLACK:
            raise UploadError(400, "bad_request", "a multipart part header is too long")
        setattr(self, attr, value)

    def _part_begin(self) -> None:
        self._headers, self._name, self._text = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name not in (FILE_FIELD, *TEXT_FIELDS):
            expected = ", ".join((FILE_FIELD, *TEXT_FIELDS))
            raise UploadError(
                422, "invalid_request", f"unknown form field {self._name!r:.80} (expected {expected})"
            )
        if self._name == FILE_FIELD:
            if self.seen_file:
                raise UploadError(400, "bad_request", f"send exactly one '{FILE_FIELD}' part")
            self.seen_file = self.in_file = True
            raw = params.get(b"filename")
            name = raw.decode("utf-8", "replace") if raw else None
            if name is not None and has_control_chars(name):
                raise UploadError(422, "invalid_request", "the file name holds control characters (NUL, ...)")
            self.writer.staged.filename = Path(name).name if name else None
            self.writer.open()
        elif self._name in self.writer.staged.fields:
            raise UploadError(400, "bad_request", f"form field {self._name!r} is sent twice")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.writer.write(data[start:end])
            return
        self._text += data[start:end]
        if len(self._text) > MAX_FIELD_BYTES:
            raise UploadError(
                400, "bad_request", f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes"
            )

    def _part_end(self) -> None:
        if self.in_file:
            self.in_file = False
            self.writer.close()
        elif self._name:
            self.writer.staged.fields[self._name] = self._text.decode("utf-8", "replace")

    def _end(self) -> None:
        self.ended = True


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a Content-Type header, else UploadError 400."""
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(
            400,
            "bad_request",
            f"expected multipart/form-data with a '{FILE_FIELD}' part, got {content_type!r:.200}",
        )
    if len(params[b"boundary"]) > MAX_BOUNDARY:
        raise UploadError(400, "bad_request", f"multipart boundary is over {MAX_BOUNDARY} characters")
    return params[b"boundary"]


async def stage_upload(
    stream: AsyncIterator[bytes],
    content_type: str | None,
    content_length: int | None,
    staging_dir: Path,
    max_bytes: int,
) -> StagedUpload:
    """Write the upload's `file` part to a new file in `staging_dir`; the caller deletes it.

    Raises UploadError: 413 when the declared or received body passes `max_bytes` (plus room for
    headers and text fields), 400 for a body that is not well-formed multipart or has no file
    part, 422 for a field outside the API, 507 when the disk is full. On error nothing is left.
    """
    boundary = boundary_of(content_type)
    body_cap = max_bytes + MULTIPART_SLACK + len(TEXT_FIELDS) * MAX_FIELD_BYTES
    if content_length is not None and content_length > body_cap:
        raise too_large(max_bytes, f"upload of {content_length} bytes")
    staging_dir.mkdir(parents=True, exist_ok=True)
    writer = _Writer(staged_path(staging_dir), max_bytes)
    sink = _PartSink(writer)
    parser = MultipartParser(boundary, sink.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > body_cap:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
        if not sink.ended:
            raise UploadError(400, "bad_request", "multipart body ends before its closing boundary")
        if not sink.seen_file:
            raise UploadError(400, "bad_request", f"multipart body has no '{FILE_FIELD}' part")
        return writer.finish()
    except MultipartParseError as e:
        writer.abort()
        raise UploadError(400, "bad_request", f"malformed multipart body: {e}") from e
    except BaseException:
        writer.abort()
        raise


async def read_capped(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """A small request body (JSON), refused with 413 as soon as it passes `max_bytes`."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise too_large(max_bytes, "request body")
    return bytes(body)


def open_below(path: Path, roots: Sequence[Path]) -> int:
    """A read-only descriptor of the regular file at `path` (already resolved), which must lie below
    one of `roots`: opened component by component from the root without following any link, so
    what is opened is what was checked even if a link is swapped in meanwhile. UploadError 400/404."""
    root = next((r for r in roots if path.is_relative_to(r)), None)
    if root is None:
        allowed = ", ".join(map(str, roots)) or "none configured (ingest_roots)"
        raise UploadError(400, "path_not_allowed", f"{path} is not below an ingest root: {allowed}")
    parts = path.relative_to(root).parts
    if not parts:
        raise UploadError(400, "path_not_allowed", f"{path} is a directory")
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, nofollow | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                child = os.open(part, nofollow | (os.O_NONBLOCK if last else os.O_DIRECTORY), dir_fd=fd)
            except FileNotFoundError as e:
                raise UploadError(404, "not_found", f"{path} does not exist on the server") from e
            except OSError as e:  # ELOOP, ENOTDIR: a link or a file where a directory was checked
                raise UploadError(
                    400, "path_not_allowed", f"{path} changed while it was opened ({e.strerror})"
                ) from e
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UploadError(400, "path_not_allowed", f"{path} is not a regular file")
        return fd
    except BaseException:
        os.close(fd)
        raise


def stage_path(path: Path, roots: Sequence[Path], staging_dir: Path, max_bytes: int) -> StagedUpload:
    """Copy the server-side file at `path` into staging (opened once, see `open_below`), hashed and
    under the upload cap, so it continues exactly like an upload. On error nothing is left."""
    fd = open_below(path, roots)
    with os.fdopen(fd, "rb") as source:
        if os.fstat(source.fileno()).st_size > max_bytes:
            raise too_large(max_bytes, f"{path.name}")
        staging_dir.mkdir(parents=True, exist_ok=True)
        writer = _Writer(staged_path(staging_dir), max_bytes)
        writer.open()
        try:
            while chunk := source.read(COPY_CHUNK):
                writer.write(chunk)
            writer.staged.filename = path.name
            return writer.finish()
        except BaseException:
            writer.abort()
            raise


def remove_quietly(path: Path | str | None) -> None:
    """Delete a staging file if it is there."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _writer_is_dead(path: Path, host: str) -> bool:
    """Whether a staged file's name says it was written by a process of this host that is gone."""
    fields = path.name[len(STAGED_PREFIX) :].rsplit("-", 2)
    if len(fields) != 3 or fields[0] != host or not fields[1].isdigit():
        return False
    pid = int(fields[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def remove_stale(
    directory: Path,
    older_than_s: float = STALE_AFTER_S,
    prefix: str = STAGED_PREFIX,
    suffix: str = STAGED_SUFFIX,
) -> int:
    """Delete temporary files left behind by a crashed process: older than `older_than_s`, or (for
    staged uploads) written by a process of this host that no longer runs."""
    if not directory.is_dir():
        return 0
    cutoff, removed, host = time.time() - older_than_s, 0, socket.gethostname()
    for path in directory.glob(f"{prefix}*{suffix}"):
        with contextlib.suppress(FileNotFoundError):
            dead = prefix == STAGED_PREFIX and _writer_is_dead(path, host)
            if dead or path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed
