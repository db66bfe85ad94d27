"""Streaming multipart staging: hashing on the way, the size cap, fields, and no leftovers."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from serve.upload import UploadError, stage_upload


def multipart(file_bytes: bytes | None, fields: dict[str, str] | None = None, filename: str = "clip.mp4"):
    """(body, content-type) built by httpx, as a client would send them."""
    files = {"file": (filename, file_bytes, "video/mp4")} if file_bytes is not None else None
    if files is None:
        files = {"other": ("x.txt", b"x", "text/plain")}
    request = httpx.Request("POST", "http://x/videos", files=files, data=fields or {})
    return request.read(), request.headers["content-type"]


async def chunks(body: bytes, size: int):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def stage(body, ctype, tmp_path, cap, length=None, chunk=1000):
    return asyncio.run(stage_upload(chunks(body, chunk), ctype, length, tmp_path / "staging", cap))


def test_file_is_streamed_to_disk_and_hashed(tmp_path):
    data = bytes(range(256)) * 100
    body, ctype = multipart(data, {"title": "A title", "metadata": '{"a": 1}'})
    staged = stage(body, ctype, tmp_path, cap=len(data), chunk=777)
    assert staged.path.read_bytes() == data and staged.size == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.filename == "clip.mp4" and staged.fields == {"title": "A title", "metadata": '{"a": 1}'}


def test_filename_cannot_escape(tmp_path):
    body, ctype = multipart(b"abc", filename="../../etc/passwd")
    staged = stage(body, ctype, tmp_path, cap=10)
    assert staged.filename == "passwd" and staged.path.parent == tmp_path / "staging"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_over_the_cap_is_413_and_leaves_nothing(tmp_path, declared):
    data = b"\0" * 200_000
    body, ctype = multipart(data)
    with pytest.raises(UploadError) as e:
        stage(body, ctype, tmp_path, cap=100_000, length=len(body) if declared else None)
    assert e.value.status == 413 and e.value.code == "too_large"
    staging = tmp_path / "staging"
    assert not staging.exists() or not list(staging.glob("*"))


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b"raw", "video/mp4"),
        (b"", None),
        (*multipart(None),),
    ],
    ids=["not-multipart", "no-content-type", "no-file-part"],
)
def test_malformed_is_400(tmp_path, body, ctype):
    with pytest.raises(UploadError) as e:
        stage(body, ctype, tmp_path, cap=1000)
    assert e.value.status == 400
    staging = tmp_path / "staging"
    assert not staging.exists() or not list(staging.glob("*"))


def test_stale_staged_files_are_removed(tmp_path):
    import os
    import time

    from serve.upload import remove_stale

    old, fresh, other = tmp_path / "upload-a.part", tmp_path / "upload-b.part", tmp_path / "keep.txt"
    for p in (old, fresh, other):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    assert remove_stale(tmp_path) == 1
    assert not old.exists() and fresh.exists() and other.exists()
    assert remove_stale(tmp_path / "missing") == 0
