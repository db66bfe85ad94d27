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
        files = {"title": (None, b"only a title")}
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


def test_a_dead_writers_staged_file_is_removed_at_once(tmp_path):
    """After a crash the restarted service cleans the dead process's files, not a live one's."""
    import socket
    import subprocess

    from serve.upload import remove_stale, staged_path

    dead = subprocess.run(["true"], check=True)  # noqa: F841 - a pid that has exited
    proc = subprocess.Popen(["true"])
    proc.wait()
    host = socket.gethostname()
    gone = tmp_path / f"upload-{host}-{proc.pid}-abc.part"
    mine = staged_path(tmp_path)
    elsewhere = tmp_path / f"upload-otherhost-{proc.pid}-abc.part"
    for p in (gone, mine, elsewhere):
        p.write_bytes(b"x")
    assert remove_stale(tmp_path) == 1
    assert not gone.exists() and mine.exists() and elsewhere.exists()


def left_in(staging) -> list:
    return list(staging.glob("*")) if staging.exists() else []


def raw_part(name: str, data: bytes, headers: bytes = b"") -> tuple[bytes, str]:
    """A one-part body written by hand (httpx would escape what these tests need raw)."""
    head = f'--B\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
    return head + headers + b"\r\n" + data + b"\r\n--B--\r\n", "multipart/form-data; boundary=B"


def test_every_byte_of_the_body_counts_towards_the_cap(tmp_path):
    """A small file followed by bytes after the closing boundary (which a parser skips), streamed
    without Content-Length, is 413: the cap counts the body, not only the file part."""
    body, ctype = raw_part("clip.mp4", b"abc")
    assert stage(body + b"x" * 1000, ctype, tmp_path, cap=1000).size == 3
    with pytest.raises(UploadError) as e:
        stage(body + b"x" * 400_000, ctype, tmp_path, cap=1000)
    assert e.value.status == 413 and len(left_in(tmp_path / "staging")) == 1


def test_a_nul_in_the_file_name_is_422(tmp_path):
    body, ctype = raw_part("clip\0.html", b"abc")
    with pytest.raises(UploadError) as e:
        stage(body, ctype, tmp_path, cap=1000)
    assert e.value.status == 422 and not left_in(tmp_path / "staging")


@pytest.mark.parametrize(
    "fields, filename, status",
    [
        ({"colour": "red"}, "clip.mp4", 422),
        ({"title": "x" * 70_000}, "clip.mp4", 400),
    ],
    ids=["unknown-field", "field-over-its-cap"],
)
def test_fields_outside_the_api_are_refused(tmp_path, fields, filename, status):
    body, ctype = multipart(b"abc", fields, filename=filename)
    with pytest.raises(UploadError) as e:
        stage(body, ctype, tmp_path, cap=1000)
    assert e.value.status == status and not left_in(tmp_path / "staging")


def test_a_field_sent_twice_is_refused(tmp_path):
    request = httpx.Request(
        "POST",
        "http://x/videos",
        files=[("title", (None, b"a")), ("title", (None, b"b")), ("file", ("c.mp4", b"abc"))],
    )
    with pytest.raises(UploadError) as e:
        stage(request.read(), request.headers["content-type"], tmp_path, cap=1000)
    assert e.value.status == 400


def test_broken_framing_is_400(tmp_path):
    body, ctype = multipart(b"abc" * 100)
    cut = body[: body.rindex(b"--\r\n") - 20]  # no closing boundary
    with pytest.raises(UploadError, match="closing boundary") as e:
        stage(cut, ctype, tmp_path, cap=1000)
    assert e.value.status == 400 and not left_in(tmp_path / "staging")
    with pytest.raises(UploadError, match="boundary is over") as e:
        stage(body, "multipart/form-data; boundary=" + "b" * 71, tmp_path, cap=1000)
    assert e.value.status == 400


def test_a_full_disk_is_507_and_leaves_nothing(tmp_path, monkeypatch):
    """Writes go to /dev/full, which fails every write with ENOSPC, as a full disk does."""
    import serve.upload

    def create_on_a_full_disk(path):
        path.touch()
        return open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - the writer closes it

    monkeypatch.setattr(serve.upload, "_create", create_on_a_full_disk)
    body, ctype = multipart(b"abc" * 1000)
    with pytest.raises(UploadError) as e:
        stage(body, ctype, tmp_path, cap=10_000)
    assert e.value.status == 507 and e.value.code == "insufficient_storage"
    assert not left_in(tmp_path / "staging")


def test_a_json_body_is_read_under_a_cap():
    from serve.upload import read_capped

    assert asyncio.run(read_capped(chunks(b"{}" * 10, 3), 100)) == b"{}" * 10
    with pytest.raises(UploadError) as e:
        asyncio.run(read_capped(chunks(b"x" * 1000, 7), 100))
    assert e.value.status == 413


def test_a_path_is_opened_once_without_following_links(tmp_path):
    """What is opened is what was checked: a link swapped in for a checked directory, a directory,
    a missing file, a file over the cap and a path outside the roots are all refused."""
    from serve.upload import stage_path

    root, outside, staging = tmp_path / "root", tmp_path / "outside", tmp_path / "staging"
    (root / "videos").mkdir(parents=True)
    outside.mkdir()
    (root / "videos" / "clip.mp4").write_bytes(b"video bytes")
    (outside / "secret.mp4").write_bytes(b"secret")
    staged = stage_path(root / "videos" / "clip.mp4", [root], staging, max_bytes=100)
    assert staged.path.read_bytes() == b"video bytes" and staged.filename == "clip.mp4"
    assert staged.sha256 == hashlib.sha256(b"video bytes").hexdigest()
    staged.path.unlink()

    (root / "swapped").symlink_to(outside)  # as if `videos` were replaced by a link after the check
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    cases = {
        root / "swapped" / "secret.mp4": 400,
        root / "link.mp4": 400,
        root / "videos": 400,
        root / "videos" / "missing.mp4": 404,
        outside / "secret.mp4": 400,
    }
    for path, status in cases.items():
        with pytest.raises(UploadError) as e:
            stage_path(path, [root], staging, max_bytes=100)
        assert e.value.status == status, path
    with pytest.raises(UploadError) as e:
        stage_path(root / "videos" / "clip.mp4", [root], staging, max_bytes=5)
    assert e.value.status == 413
    assert not left_in(staging)
