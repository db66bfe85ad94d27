"""App args, config validation, the Serve config file and the client's formatting (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaclip.config import load_config
from adaclip.errors import ConfigError
from serve.app import build_application, serving_config
from serve.client import format_moment, format_results
from serve.run import read_serve_config
from serve.schemas import AppArgs

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def test_checkpoint_override_is_split_out(tmp_path):
    args = AppArgs(overrides=["index.path=x", f"model.checkpoint={tmp_path}/c.pt", "model.top_k=2"])
    split = args.split_checkpoint()
    assert split.checkpoint == tmp_path / "c.pt" and split.overrides == ["index.path=x", "model.top_k=2"]
    assert AppArgs(staging_dir="rel").staging_dir.is_absolute()


def test_serving_config_validates(tmp_path):
    cfg = serving_config(AppArgs(config=ROOT / "configs/tiny.yaml", overrides=["index.path=rel/idx"]))
    assert cfg.index.path.is_absolute() and cfg.model.top_k == 4
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
    assert "max_batch_size" in spec["deployments"]["SearchAPI"]["user_config"]
    app = build_application(AppArgs.model_validate(spec["args"]), spec["deployments"])
    assert type(app).__name__ == "Application"
    for options in ({"num_replicas": 2}, {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}}):
        with pytest.raises(ConfigError, match="one owner"):  # the ingress holds the Edge index
            build_application(AppArgs.model_validate(spec["args"]), {"SearchAPI": options})
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

    stale = tmp_path / "media" / ".pending" / "media-crashed.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    store = MediaStore(tmp_path / "media")
    assert not stale.exists()  # a crashed copy's temporary file is cleaned at start
    vid = str(uuid.uuid4())
    pending = store.prepare(vid.upper(), tmp_path / "page")
    assert store.find(vid) is None  # prepared is not served
    kept = store.commit(pending)
    assert kept.name == f"{vid}.video"  # never .html: the client's name plays no part
    for spelling in (vid, vid.upper(), vid.replace("-", ""), f"urn:uuid:{vid}"):
        assert store.find(spelling) == kept
    assert store.commit(store.prepare(vid, mp4)) == kept  # one file per id
    assert store.find("../../etc/passwd") is None
    withdrawn = store.withdraw(f"urn:uuid:{vid}")
    assert store.find(vid) is None and withdrawn.exists()
    store.commit(withdrawn)  # a failed delete puts it back
    assert store.find(vid) == kept
    store.discard(store.withdraw(vid))
    assert store.find(vid) is None and not list(store.pending.iterdir())


def test_media_reconcile_settles_what_a_crash_left_pending(tmp_path, synth_corpus):
    """A pending file whose point exists is served after restart; one without a point is deleted
    once it is older than an upload can take, never while it may be in flight."""
    import asyncio
    import os
    import time
    import uuid

    from serve.media import PENDING_GRACE_S, MediaStore

    mp4 = next((synth_corpus / "videos").glob("*.mp4"))
    store = MediaStore(tmp_path / "media")
    indexed, orphan, young = (str(uuid.uuid4()) for _ in range(3))
    store.prepare(indexed, mp4)  # crashed after the index write, before commit
    old = store.prepare(orphan, mp4)  # crashed before the index write
    os.utime(old, (time.time() - PENDING_GRACE_S - 1,) * 2)
    store.prepare(young, mp4)  # another replica's upload in flight

    async def is_indexed(vid: str) -> bool:
        return vid == indexed

    assert asyncio.run(store.reconcile(is_indexed)) == (1, 1)
    assert store.find(indexed) is not None and store.find(orphan) is None and store.find(young) is None
    assert [p.name.startswith(young) for p in store.pending.iterdir()] == [True]


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


def test_writes_refuse_other_sites_and_need_the_key_when_one_is_set():
    from serve.http_errors import ApiError
    from serve.ingress import authorize_write

    def status(headers, allowed=(), key=None):
        try:
            authorize_write({"host": "search.example:8000", **headers}, list(allowed), key)
        except ApiError as e:
            return e.status
        return 200

    assert status({}) == 200  # curl, scripts: no Origin
    assert status({"origin": "http://search.example:8000"}) == 200  # the app's own page
    assert status({"origin": "https://evil.example"}) == 403
    assert status({"origin": "null"}) == 403  # a sandboxed or file: page
    assert status({"origin": "https://admin.example"}, allowed=["https://admin.example"]) == 200
    assert status({}, key=b"s3cret") == 401
    assert status({"x-api-key": "wrong"}, key=b"s3cret") == 401
    assert status({"x-api-key": "s3cret"}, key=b"s3cret") == 200
    assert status({"x-api-key": "s3cret", "origin": "https://evil.example"}, key=b"s3cret") == 403


@pytest.mark.parametrize(
    "metadata, ok",
    [
        ({"a": {"b": [1, 2, {"c": "d"}]}}, True),
        ({"x": float("nan")}, False),
        ({"x": [float("-inf")]}, False),
        ({"x": "a\0b"}, False),
        ({"a\0": 1}, False),
        ({"deep": json.loads("[" * 7 + "1" + "]" * 7)}, True),
        ({"deep": json.loads("[" * 8 + "1" + "]" * 8)}, False),
    ],
    ids=["nested", "nan", "inf-in-list", "nul-value", "nul-key", "depth-8", "depth-9"],
)
def test_metadata_the_index_would_reject_is_422(metadata, ok):
    from serve.http_errors import ApiError
    from serve.ingress import check_metadata

    if ok:
        check_metadata(metadata)
    else:
        with pytest.raises(ApiError) as e:
            check_metadata(metadata)
        assert e.value.status == 422


def test_the_qdrant_key_is_never_written_out(tmp_path):
    """Not to a checkpoint, not to the Serve deployment args: only the process that was given it
    (or QDRANT_API_KEY in each replica's environment) holds it."""
    from adaclip.checkpoint import read_checkpoint, save_checkpoint
    from adaclip.encoding import load_encoder_model

    cfg = load_config(TINY, ["index.api_key=s3cret-key"])
    assert cfg.index.api_key.get_secret_value() == "s3cret-key" and "s3cret" not in repr(cfg)
    assert "s3cret" not in cfg.model_dump_json()
    path = save_checkpoint(tmp_path / "m.pt", load_encoder_model(cfg, seed=0), cfg)
    assert "s3cret" not in json.dumps(read_checkpoint(path)["config"])
    with pytest.raises(ConfigError, match="QDRANT_API_KEY"):
        build_application(AppArgs(config=TINY, overrides=["index.api_key=s3cret-key"]))


def test_encoder_asks_for_a_gpu_only_when_the_cluster_has_one_and_nothing_says_otherwise(monkeypatch):
    import serve.app as app_module
    from serve.encoder import VideoEncoder

    monkeypatch.setattr(app_module, "_cluster_gpus", lambda: 0.0)
    assert app_module.with_gpu(VideoEncoder, {}) == {}
    monkeypatch.setattr(app_module, "_cluster_gpus", lambda: 2.0)
    got = app_module.with_gpu(VideoEncoder, {"max_ongoing_requests": 4})
    assert got == {"max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 1}}
    for options in (
        {"ray_actor_options": {"num_gpus": 0}},
        {"ray_actor_options": {"num_cpus": 2, "num_gpus": 0.5}},
    ):
        assert app_module.with_gpu(VideoEncoder, options) == options
    # options' ray_actor_options replace the decorator's (as Serve does): the GPU joins them alone
    got = app_module.with_gpu(VideoEncoder, {"ray_actor_options": {"num_cpus": 2}})
    assert got == {"ray_actor_options": {"num_cpus": 2, "num_gpus": 1}}
