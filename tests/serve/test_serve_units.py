"""App args, config validation, the Serve config file and the client's formatting (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaclip.errors import ConfigError
from serve.app import build_application, serving_config
from serve.client import format_moment, format_results
from serve.run import read_serve_config
from serve.schemas import AppArgs

ROOT = Path(__file__).resolve().parents[2]


def test_checkpoint_override_is_split_out(tmp_path):
    args = AppArgs(overrides=["index.path=x", f"model.checkpoint={tmp_path}/c.pt", "model.top_k=2"])
    split = args.split_checkpoint()
    assert split.checkpoint == tmp_path / "c.pt" and split.overrides == ["index.path=x", "model.top_k=2"]
    assert AppArgs(staging_dir="rel").staging_dir.is_absolute()


def test_serving_config_validates(tmp_path):
    cfg = serving_config(AppArgs(config=ROOT / "configs/tiny.yaml", overrides=["index.path=rel/idx"]))
    assert cfg.index.path.is_absolute() and cfg.model.top_k == 4
    with pytest.raises(ConfigError, match="one owner"):
        serving_config(AppArgs(index_replicas=2))
    with pytest.raises(ConfigError, match="does not exist"):
        serving_config(AppArgs(checkpoint=tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match=r"model\.top_kk"):
        serving_config(AppArgs(overrides=["model.top_kk=3"]))
    with pytest.raises(ValueError, match="max_upload_bytes"):
        AppArgs(max_upload_bytes=0)


def test_serve_yaml_builds_an_app():
    spec = read_serve_config(str(ROOT / "configs/serve.yaml"))
    assert spec["name"] == "adaclip" and spec["http_options"]["port"] == 8000
    assert spec["deployments"]["VideoEncoder"]["autoscaling_config"]["max_replicas"] >= 1
    assert "max_batch_size" in spec["deployments"]["IndexService"]["user_config"]
    app = build_application(AppArgs.model_validate(spec["args"]), spec["deployments"])
    assert type(app).__name__ == "Application"
    plain = read_serve_config(str(ROOT / "configs/tiny.yaml"))  # a model config works too
    assert plain["args"] == {"config": str(ROOT / "configs/tiny.yaml")}


def test_client_formatting():
    assert format_moment(None) == "-" and format_moment(75.25) == "01:15.2" and format_moment(3) == "00:03.0"
    answer = {
        "query": "q",
        "mode": "rerank",
        "took_ms": 3.0,
        "results": [{"rank": 1, "score": 0.5, "moment": 1.5, "payload": {"title": "cat", "source": "c.mp4"}}],
    }
    lines = format_results(answer).splitlines()
    assert lines[0].startswith("1 results for 'q'") and "00:01.5" in lines[2] and "cat (c.mp4)" in lines[2]


def test_media_suffix_comes_from_the_bytes_and_ids_from_any_uuid_spelling(tmp_path, synth_corpus):
    import os
    import time
    import uuid

    from serve.media import MediaStore, container_suffix

    mp4 = next((synth_corpus / "videos").glob("*.mp4"))
    samples = {
        "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + b"\0" * 64,
        "mkv": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska" + b"\0" * 64,
        "avi": b"RIFF\0\0\0\0AVI LIST" + b"\0" * 64,
        "page": b"<html><script>alert(1)</script></html>",
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    assert container_suffix(mp4) == ".mp4"
    assert [container_suffix(tmp_path / n) for n in samples] == [".webm", ".mkv", ".avi", ".video"]

    stale = tmp_path / "media" / "media-crashed.part"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    store = MediaStore(tmp_path / "media")
    assert not stale.exists()  # a crashed copy's temporary file is cleaned at start
    vid = str(uuid.uuid4())
    kept = store.keep(vid.upper(), tmp_path / "page")
    assert kept.name == f"{vid}.video"  # never .html: the client's name plays no part
    for spelling in (vid, vid.upper(), vid.replace("-", ""), f"urn:uuid:{vid}"):
        assert store.find(spelling) == kept
    assert store.keep(vid, mp4) == kept  # one file per id
    assert store.find("../../etc/passwd") is None
    store.remove(f"urn:uuid:{vid}")
    assert store.find(vid) is None


def test_an_unexpected_error_is_a_generic_500_with_a_request_id(caplog):
    """The client never sees the exception's text (pids, node addresses, tracebacks); the log does."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serve.http_errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("task failed on node 10.1.2.3, pid=4242\nTraceback: secret")

    with caplog.at_level("ERROR", logger="ray.serve"):
        r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    request_id = r.headers["x-request-id"]
    assert request_id in r.json()["error"]["message"]
    assert "10.1.2.3" not in r.text and "4242" not in r.text and "secret" not in r.text
    logged = "\n".join(rec.getMessage() + str(rec.exc_info[1]) for rec in caplog.records)
    assert request_id in logged and "10.1.2.3" in logged
