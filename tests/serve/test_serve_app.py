"""The real Serve app on 127.0.0.1 (local Ray, tiny model): ingest over HTTP, search against a
brute-force ranking of the same embeddings, delete, every bad input, restart persistence and an
unreachable Qdrant server. The app starts once for the module (plus one restart)."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from processes import free_port, one_encoder

from adaclip.config import load_config
from adaclip.encoding import decode_for_model, encode_decoded, encode_queries, load_encoder_model
from adaclip.ops import query_scoring_similarity

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
APP, DOWN_APP = "adaclip-test", "adaclip-down"
NUM_VIDEOS = 8  # uploaded and ranked; one more is kept back for the concurrency test
CAP = 256 * 1024  # upload cap of the test app (the synthetic videos are ~30 KiB)


def corpus_dir(synth_corpus: Path) -> Path:
    return synth_corpus.parent if synth_corpus.is_file() else synth_corpus


def wait_healthy(url: str, deadline_s: float = 120.0, ok=lambda r: r.status_code == 200) -> httpx.Response:
    """Poll /healthz every 0.1 s until `ok(response)`, failing at the deadline."""
    deadline = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=5)
            if ok(r):
                return r
            last = r.text
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)  # poll interval, not a synchronisation delay
    raise AssertionError(f"{url}/healthz not ready within {deadline_s}s: {last}")


class ServedApp:
    """Starts, restarts and stops one named Serve application with fixed args."""

    def __init__(self, name: str, route_prefix: str, args: dict, port: int, deployments: dict):
        self.name, self.route_prefix, self.args, self.deployments = name, route_prefix, args, deployments
        self.url = f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"

    def start(self, ok=lambda r: r.status_code == 200) -> None:
        from ray import serve

        from serve.app import build_application
        from serve.schemas import AppArgs

        app = build_application(AppArgs.model_validate(self.args), self.deployments)
        serve.run(app, name=self.name, route_prefix=self.route_prefix)
        wait_healthy(self.url, ok=ok)

    def stop(self) -> None:
        from ray import serve

        serve.delete(self.name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    """A tiny random-init model saved as a checkpoint: the app and the test use the same weights."""
    from adaclip.checkpoint import save_checkpoint

    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=1234)
    return save_checkpoint(workdir / "tiny.pt", model, cfg)


@pytest.fixture(scope="module")
def serve_port(ray_local):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def app(serve_port, checkpoint, workdir, synth_corpus) -> ServedApp:
    args = {
        "config": str(TINY),
        "overrides": [
            f"index.path={workdir / 'index'}",
            f"model.checkpoint={checkpoint}",
            "index.window_seconds=60",  # the long test videos and the live stream are cut in minutes
        ],
        "staging_dir": str(workdir / "staging"),
        "media_dir": str(workdir / "media"),
        "streams_dir": str(workdir / "streams"),
        "max_upload_bytes": CAP,
        "ingest_roots": [str(corpus_dir(synth_corpus))],
    }
    served = ServedApp(APP, "/", args, serve_port, one_encoder(0.3))
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def videos(synth_corpus) -> list[dict]:
    """The corpus rows (path, captions) in annotation order."""
    root = corpus_dir(synth_corpus)
    rows = [
        json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines() if line.strip()
    ]
    return [{**r, "path": root / r["video"]} for r in rows]


def upload(url: str, path: Path, name: str | None = None, **fields) -> httpx.Response:
    with open(path, "rb") as f:
        files = {"file": (name or path.name, f, "video/mp4")}
        return httpx.post(f"{url}/videos", files=files, data=fields, timeout=120)


def count(url: str) -> int:
    r = httpx.get(f"{url}/stats", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["count"]


@pytest.fixture(scope="module")
def uploaded(app, videos) -> dict[str, dict]:
    """Upload NUM_VIDEOS videos concurrently (so the encoder batches them): id -> corpus row."""
    chosen = videos[:NUM_VIDEOS]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda v: upload(app.url, v["path"], title=v["title"]), chosen))
    ids = {}
    for v, r in zip(chosen, answers, strict=True):
        assert r.status_code == 201, r.text
        assert r.json()["created"] is True and r.json()["title"] == v["title"]
        ids[r.json()["id"]] = v
    assert count(app.url) == NUM_VIDEOS
    return ids


def assert_ranking(served: list[dict], expected: dict[str, float], k: int) -> None:
    """Served ids/scores equal the brute-force top k (order checked wherever scores differ)."""
    best = sorted(expected.items(), key=lambda kv: -kv[1])[:k]
    assert len(served) == len(best)
    for hit, (vid, score) in zip(served, best, strict=True):
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-4)
        assert hit["score"] == pytest.approx(score, abs=1e-4)
        if all(abs(score - s) > 1e-4 for v, s in expected.items() if v != vid):
            assert hit["id"] == vid


def test_search_equals_brute_force(app, uploaded, checkpoint):
    """Every mode's served ranking equals one computed here over the same weights and videos."""
    from adaclip.checkpoint import load_model

    model, cfg = load_model(checkpoint)
    ids = list(uploaded)
    encoded = encode_decoded(model, [decode_for_model(uploaded[i]["path"], cfg) for i in ids])
    video = torch.from_numpy(np.stack([e.video for e in encoded]))  # (V, D)
    frames = torch.from_numpy(np.stack([e.frames for e in encoded]))  # (V, K, D)
    queries = [uploaded[ids[0]]["captions"][0], uploaded[ids[3]]["captions"][1], "a big blue square"]
    text = torch.from_numpy(encode_queries(model, queries, cfg.data.max_text_tokens))  # (T, D)
    fast = (text @ video.T).numpy()  # (T, V) cosine
    qscore = query_scoring_similarity(text, frames, cfg.model.qscore_temperature).numpy()  # (T, V)
    for t, q in enumerate(queries):
        for mode, sims in (("fast", fast), ("rerank", qscore), ("exact", qscore)):
            r = httpx.get(f"{app.url}/search", params={"q": q, "k": 5, "mode": mode}, timeout=60)
            assert r.status_code == 200, r.text
            assert_ranking(r.json()["results"], dict(zip(ids, sims[t].tolist(), strict=True)), k=5)
        # the moment is the timestamp of the kept frame closest to the query
        top = r.json()["results"][0]
        e = encoded[ids.index(top["id"])]
        cos = torch.nn.functional.normalize(torch.from_numpy(e.frames), dim=-1) @ text[t]
        assert top["moment"] == pytest.approx(float(e.frame_timestamps[int(cos.argmax())]))
        assert top["payload"]["frame_timestamps"] == pytest.approx(e.frame_timestamps.tolist())
    default = httpx.get(f"{app.url}/search", params={"q": queries[0]}, timeout=60).json()
    assert default["mode"] == "rerank" and len(default["results"]) == NUM_VIDEOS  # k=10 > 8 stored


def test_get_filter_and_reupload(app, uploaded):
    vid, row = next(iter(uploaded.items()))
    r = httpx.get(f"{app.url}/videos/{vid}", timeout=30)
    assert r.status_code == 200 and r.json()["payload"]["title"] == row["title"]
    assert r.json()["payload"]["source"] == row["path"].name and r.json()["num_frames"] == 4
    hits = httpx.get(f"{app.url}/search", params={"q": "x", "source": row["path"].name}, timeout=30).json()
    assert [h["id"] for h in hits["results"]] == [vid]
    again = upload(app.url, row["path"], name="renamed.mp4")  # same bytes: same id, nothing new
    assert again.status_code == 200 and again.json() == {**again.json(), "id": vid, "created": False}
    assert count(app.url) == NUM_VIDEOS


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.mp4", lambda v: b""),
        ("notes.mp4", lambda v: b"this is a text file, not a video\n" * 20),
        ("cut.mp4", lambda v: v.read_bytes()[: v.stat().st_size // 2]),
    ],
    ids=["empty", "text-named-mp4", "truncated"],
)
def test_bad_upload_is_415_and_changes_nothing(app, uploaded, videos, workdir, name, content):
    before = count(app.url)
    body = content(videos[-1]["path"])
    r = httpx.post(f"{app.url}/videos", files={"file": (name, body, "video/mp4")}, timeout=60)
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "not_a_video" and name in r.json()["error"]["message"]
    assert count(app.url) == before
    assert not list((workdir / "staging").glob("*")), "staging files must be removed"


def test_bad_requests(app, uploaded):
    r = httpx.post(
        f"{app.url}/videos", files={"file": ("big.mp4", b"\0" * (CAP + 100_000), "video/mp4")}, timeout=60
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    bad_filters = [{"q": "a", "filter": key + ":1"} for key in ("a b", "'\"", "x" * 65, "a\u0000")]
    for params in (
        {"q": "a", "k": 0},
        {"q": "a", "k": 5000},
        {"q": "a", "mode": "fuzzy"},
        {"k": 3},
        *bad_filters,
    ):
        r = httpx.get(f"{app.url}/search", params=params, timeout=30)
        assert r.status_code == 422, (params, r.text)
        assert set(r.json()["error"]) == {"code", "message"}
    for vid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert httpx.get(f"{app.url}/videos/{vid}", timeout=30).status_code == 404
        assert httpx.delete(f"{app.url}/videos/{vid}", timeout=30).json()["error"]["code"] == "not_found"
    r = httpx.post(
        f"{app.url}/videos", content=b"raw bytes", headers={"content-type": "video/mp4"}, timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    vid = next(iter(uploaded))
    for t in ("inf", "nan", "1e300", "-1"):  # a thumbnail time must be a finite, sane number: 422
        r = httpx.get(f"{app.url}/videos/{vid}/thumbnail", params={"t": t}, timeout=30)
        assert r.status_code == 422, (t, r.text)
    assert httpx.get(f"{app.url}/videos/{vid}/thumbnail", params={"t": 1.5}, timeout=30).status_code == 200
    assert httpx.get(f"{app.url}/docs", timeout=30).status_code == 200
    page = httpx.get(f"{app.url}/", timeout=30)
    assert (
        page.status_code == 200
        and "search?" in page.text
        and page.headers["content-type"].startswith("text/html")
    )
    assert "/search" in httpx.get(f"{app.url}/openapi.json", timeout=30).json()["paths"]


def test_ingest_by_path_only_below_roots(app, uploaded, videos, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(videos[0]["path"].read_bytes())
    r = httpx.post(f"{app.url}/videos", json={"path": str(outside)}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed"
    sneaky = videos[0]["path"].parent / ".." / ".." / outside.parent.name / outside.name
    assert httpx.post(f"{app.url}/videos", json={"path": str(sneaky)}, timeout=60).status_code == 400
    r = httpx.post(f"{app.url}/videos", json={"path": str(videos[0]["path"])}, timeout=60)
    assert r.status_code == 200 and r.json()["id"] in uploaded


def test_same_file_uploaded_concurrently_is_one_point(app, uploaded, videos):
    before = count(app.url)
    path = videos[NUM_VIDEOS]["path"]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: upload(app.url, path, name=f"client{i}.mp4"), range(6)))
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sorted(r.status_code for r in answers).count(201) == 1
    assert count(app.url) == before + 1


def test_delete(app, uploaded, videos):
    path = videos[NUM_VIDEOS + 1]["path"]
    vid = upload(app.url, path).json()["id"]
    before = count(app.url)
    assert httpx.delete(f"{app.url}/videos/{vid}", timeout=30).json() == {"id": vid, "deleted": True}
    assert httpx.get(f"{app.url}/videos/{vid}", timeout=30).status_code == 404
    assert count(app.url) == before - 1
    hits = httpx.get(
        f"{app.url}/search", params={"q": videos[NUM_VIDEOS + 1]["captions"][0], "k": 100}
    ).json()
    assert vid not in {h["id"] for h in hits["results"]}


def test_media_is_a_video_whatever_the_uploaded_name(app, uploaded, videos, workdir):
    """No stored XSS: a real video uploaded as `page.html` is stored under a suffix the server
    chose from its bytes and served as video/mp4 with nosniff, never as a page."""
    path = videos[NUM_VIDEOS + 2]["path"]
    vid = upload(app.url, path, name="page.html").json()["id"]
    media = httpx.get(f"{app.url}/videos/{vid}/media", timeout=30)
    assert media.status_code == 200 and media.content == path.read_bytes()
    assert media.headers["content-type"] == "video/mp4"
    assert media.headers["x-content-type-options"] == "nosniff"
    assert [p.name for p in (workdir / "media").glob(f"{vid}*")] == [f"{vid}.mp4"]
    upload(app.url, path, name="again.mkv")  # the same bytes under another name: no second copy
    assert len(list((workdir / "media").glob(f"{vid}*"))) == 1
    # DELETE in another spelling of the same UUID removes the point and its media
    spelled = vid.replace("-", "").upper()
    assert httpx.delete(f"{app.url}/videos/{spelled}", timeout=30).status_code == 200
    assert httpx.get(f"{app.url}/videos/{vid}/media", timeout=30).status_code == 404
    assert not list((workdir / "media").glob(f"{vid}*"))


@pytest.mark.parametrize("metadata", ['{"x": NaN}', '{"x": 1e1000}', '{"a": [1, {"b": -Infinity}]}'])
def test_non_finite_metadata_is_422_and_stores_nothing(app, uploaded, videos, workdir, metadata):
    before, files = count(app.url), sorted((workdir / "media").iterdir())
    r = upload(app.url, videos[NUM_VIDEOS + 3]["path"], metadata=metadata)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert count(app.url) == before and sorted((workdir / "media").iterdir()) == files


def test_hostile_requests_are_4xx_and_change_nothing(app, uploaded, videos, workdir):
    """Each answer is a clear 4xx, and neither the index, the media nor staging changes."""
    path = videos[NUM_VIDEOS + 3]["path"]
    before, files = count(app.url), sorted((workdir / "media").iterdir())
    data = path.read_bytes()

    def post(**kwargs) -> httpx.Response:
        return httpx.post(f"{app.url}/videos", timeout=60, **kwargs)

    cases = {
        "cross-site upload": (
            403,
            post(files={"file": ("a.mp4", data)}, headers={"origin": "https://evil.example"}),
        ),
        "unknown form field": (422, post(files={"file": ("a.mp4", data), "colour": (None, b"red")})),
        "NUL in the title": (422, post(files={"file": ("a.mp4", data)}, data={"title": "a\0b"})),
        "metadata too deep": (
            422,
            post(files={"file": ("a.mp4", data)}, data={"metadata": '{"a":' * 12 + "1" + "}" * 12}),
        ),
        "no closing boundary": (
            400,
            post(
                content=b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
                + data[:500],
                headers={"content-type": "multipart/form-data; boundary=B"},
            ),
        ),
        "NUL in a path": (422, post(json={"path": str(path) + "\0.mp4"})),
        "JSON body over its cap": (413, post(json={"path": "x" * 100_000})),
        "unknown JSON field": (422, post(json={"path": str(path), "owner": "me"})),
    }
    for name, (status, r) in cases.items():
        assert r.status_code == status, (name, r.text)
        assert set(r.json()["error"]) == {"code", "message"}, name
    r = httpx.get(f"{app.url}/search", params={"q": "a", "candidates": 5000}, timeout=30)
    assert r.status_code == 422, r.text
    r = httpx.delete(
        f"{app.url}/videos/{next(iter(uploaded))}", headers={"origin": "https://evil.example"}, timeout=30
    )
    assert r.status_code == 403
    assert count(app.url) == before and sorted((workdir / "media").iterdir()) == files
    assert not list((workdir / "staging").glob("*"))


def test_real_world_files_ingest_with_their_duration_moments_thumbnails_and_ranges(app, uploaded, tmp_path):
    """H.264+AAC 720p/1080p, odd sizes, MPEG-4 in Matroska, WebM, one frame and minutes-long files
    all ingest over HTTP; a long one as 60 s windows covering it all, each with its kept frames
    and moment inside it; thumbnails and range requests work; an audio-only file is 415."""
    import formats

    media = formats.make_all(tmp_path / "real_world")
    for name, written in media.items():
        r = upload(app.url, written.path)
        assert r.status_code == 201, (name, r.text)
        vid, duration, stamps = r.json()["id"], r.json()["duration"], r.json()["frame_timestamps"]
        assert duration == pytest.approx(written.duration, abs=1.01 / written.fps), name
        assert all(0 <= t < duration + 1e-6 for t in stamps), (name, stamps, duration)
        windows = httpx.get(f"{app.url}/videos/{vid}", timeout=30).json()["windows"]
        assert windows[0]["start"] == 0 and windows[-1]["end"] == pytest.approx(duration, abs=1e-3), name
        assert all(a["end"] == b["start"] for a, b in zip(windows, windows[1:], strict=False)), windows
        assert len(windows) == max(1, math.ceil(duration / 60 - 1e-9)), (name, windows)
        hit = httpx.get(
            f"{app.url}/search", params={"q": "x", "filter": f"content_hash:{r.json()['content_hash']}"}
        )
        assert [h["id"] for h in hit.json()["results"]] == [vid], name  # grouped: the video once
        params = {"q": "x", "source": written.path.name, "group": "false", "mode": "exact"}
        every = httpx.get(f"{app.url}/search", params=params, timeout=30).json()["results"]
        assert sorted(h["window"]["index"] for h in every) == list(range(len(windows))), name
        for h in every:  # each window's kept frames and moment lie inside that window
            span = windows[h["window"]["index"]]
            assert h["id"] == vid and span["start"] <= h["moment"] <= span["end"], (name, h)
            assert all(span["start"] <= t <= span["end"] for t in h["payload"]["frame_timestamps"])
        png = httpx.get(f"{app.url}/videos/{vid}/thumbnail", params={"t": stamps[-1]}, timeout=30)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", name
        part = httpx.get(f"{app.url}/videos/{vid}/media", headers={"range": "bytes=10-109"}, timeout=30)
        assert part.status_code == 206 and part.content == written.path.read_bytes()[10:110], name
    long = media["long_mp4"].path  # a windowed video: re-ingested it is the same video, deleted all of it
    again = upload(app.url, long, name="renamed.mp4")
    assert again.status_code == 200 and again.json()["created"] is False
    vid = again.json()["id"]
    assert httpx.delete(f"{app.url}/videos/{vid}", timeout=30).status_code == 200
    params = {"q": "x", "source": long.name, "group": "false", "mode": "exact"}
    assert httpx.get(f"{app.url}/search", params=params, timeout=30).json()["results"] == []
    assert httpx.get(f"{app.url}/videos/{vid}/media", timeout=30).status_code == 404
    audio = formats.write_audio_only(tmp_path / "speech.m4a")
    r = upload(app.url, audio.path)
    assert r.status_code == 415 and "no video stream" in r.json()["error"]["message"], r.text


def poll(fetch, until, deadline_s: float = 120.0):
    """`fetch()` every 0.2 s until `until(value)`, failing at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = fetch()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"not reached within {deadline_s}s: {value}"
        time.sleep(0.2)  # poll interval, not a synchronisation delay


def test_a_live_stream_is_searchable_window_by_window_and_equals_its_whole_file(app, uploaded, tmp_path):
    """Segments pushed as an encoder cuts them (12 s MPEG-TS, 60 s windows): a window is searchable
    once the next one starts, without ending the stream; retries are idempotent, gaps 409; a restart
    mid-stream loses nothing; the ended stream's windows score exactly as the whole file's."""
    import formats

    segments = formats.write_ts_segments(tmp_path / "live", num_segments=12, seg_frames=24, fps=2)
    r = httpx.post(f"{app.url}/streams", json={"title": "camera 7", "metadata": {"site": "dock"}}, timeout=30)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    def push(i: int, start: float | None = None) -> httpx.Response:
        with open(segments[i], "rb") as f:
            files = {"file": (segments[i].name, f, "video/mp2t")}
            params = {"start": 12.0 * i if start is None else start}
            return httpx.post(f"{app.url}/streams/{sid}/segments", params=params, files=files, timeout=60)

    def indexed() -> list[int]:
        return [w["window"] for w in httpx.get(f"{app.url}/streams/{sid}", timeout=30).json()["indexed"]]

    for i in range(6):
        assert push(i).status_code == 201, push(i).text
    poll(indexed, lambda got: got == [0])  # [0, 60) is complete: segment 5 starts at 60 s
    live = {"q": "x", "source": "camera 7", "group": "false", "mode": "exact"}
    hits = httpx.get(f"{app.url}/search", params=live, timeout=30).json()["results"]
    assert [(h["id"], h["window"]["index"]) for h in hits] == [(sid, 0)]
    assert push(5).status_code == 200  # a retry of a stored segment
    gap = push(7)
    assert gap.status_code == 409 and "must start at 72" in gap.json()["error"]["message"]
    app.stop()
    app.start()  # mid-stream: every acknowledged segment survives
    for i in range(6, 12):
        assert push(i).status_code == 201
    ended = httpx.post(f"{app.url}/streams/{sid}/end", timeout=120).json()
    assert [w["window"] for w in ended["indexed"]] == [0, 1, 2] and ended["duration"] == 144.0
    assert all(w["delay_s"] >= 0 for w in ended["indexed"]), ended
    spans = [
        (w["start"], w["end"]) for w in httpx.get(f"{app.url}/videos/{sid}", timeout=30).json()["windows"]
    ]
    assert spans == [(0.0, 60.0), (60.0, 120.0), (120.0, 144.0)]
    media = httpx.get(f"{app.url}/videos/{sid}/media", timeout=30)
    assert media.content == b"".join(p.read_bytes() for p in segments)

    whole = tmp_path / "whole.ts"  # the same recording uploaded as one file
    whole.write_bytes(media.content)
    assert upload(app.url, whole).status_code == 201
    for q in ("a small red square", "a large blue circle", "grey"):
        by_window = {}
        for source in ("camera 7", "whole.ts"):
            params = {**live, "q": q, "source": source}
            results = httpx.get(f"{app.url}/search", params=params, timeout=30).json()["results"]
            by_window[source] = {h["window"]["index"]: (h["score"], h["moment"]) for h in results}
        assert sorted(by_window["camera 7"]) == [0, 1, 2]
        for w, (score, moment) in by_window["camera 7"].items():
            assert score == pytest.approx(by_window["whole.ts"][w][0], abs=1e-4)
            assert moment == pytest.approx(by_window["whole.ts"][w][1], abs=1e-3)
    assert httpx.delete(f"{app.url}/videos/{sid}", timeout=30).status_code == 200
    assert httpx.get(f"{app.url}/streams/{sid}", timeout=30).status_code == 404
    assert httpx.get(f"{app.url}/search", params=live, timeout=30).json()["results"] == []


def test_search_client(app, uploaded, capsys):
    from serve.client import main

    assert main(["a small red circle", "--url", app.url, "--k", "3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["results"]) == 3 and answer["mode"] == "rerank"
    assert main(["a small red circle", "--url", app.url, "--k", "2", "--mode", "fast"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("2 results") and len(table) == 4 and ":" in table[2]
    assert main(["x", "--url", app.url, "--k", "0"]) == 1
    assert "422" in capsys.readouterr().err


def test_restart_keeps_every_acknowledged_video(app, uploaded):
    before = httpx.get(f"{app.url}/search", params={"q": "anything", "k": 1000, "mode": "exact"}).json()
    acknowledged = {h["id"] for h in before["results"]}
    assert set(uploaded) <= acknowledged
    app.stop()
    app.start()
    assert count(app.url) == len(acknowledged)
    for vid in acknowledged:
        assert httpx.get(f"{app.url}/videos/{vid}", timeout=30).status_code == 200


def test_index_server_down_is_503_with_retry_after(serve_port, checkpoint, workdir, app):
    closed = free_port()  # nothing listens there
    args = {
        "config": str(TINY),
        "overrides": [
            "index.backend=server",
            f"index.url=http://127.0.0.1:{closed}",
            "index.timeout_s=1",
            f"model.checkpoint={checkpoint}",
        ],
        "staging_dir": str(workdir / "staging-down"),
        "media_dir": str(workdir / "media-down"),
        "streams_dir": str(workdir / "streams-down"),
        "retry_after_s": 7,
    }
    down = ServedApp(DOWN_APP, "/down", args, serve_port, one_encoder(0.1, ingress_cpus=0.05))
    down.start(ok=lambda r: r.status_code == 503)
    try:
        for r in (
            httpx.get(f"{down.url}/healthz", timeout=30),
            httpx.get(f"{down.url}/search", params={"q": "a red circle"}, timeout=30),
            httpx.get(f"{down.url}/stats", timeout=30),
            httpx.post(f"{down.url}/videos", files={"file": ("a.mp4", b"\0\0\0\x18ftypmp42", "video/mp4")}),
        ):
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "7" and r.json()["error"]["code"] == "index_unavailable"
        assert count(app.url) > 0  # the other app is unaffected
    finally:
        down.stop()


def test_reindex_moves_searches_and_uploads_to_a_new_model_in_one_step(
    app, uploaded, videos, workdir, capsys
):
    """`adaclip reindex` under a running search loop: every search answers, each sees one model,
    the old model's answers stop at one point; then uploads use the new model, the old collection
    can be dropped and the active one cannot."""
    import threading

    from adaclip.checkpoint import save_checkpoint
    from adaclip.encoding import content_hash
    from adaclip.index import video_id
    from adaclip_cli.index import main as index_main
    from adaclip_cli.reindex import main as reindex_main

    cfg = load_config(TINY)
    new_model = load_encoder_model(cfg, seed=4321)
    new_ckpt = save_checkpoint(workdir / "tiny-v2.pt", new_model, cfg)
    before = httpx.get(f"{app.url}/stats", timeout=30).json()
    kept = [vid for vid in uploaded if httpx.get(f"{app.url}/videos/{vid}", timeout=30).status_code == 200]
    old_version, new_version = before["model_version"], new_model.model_version
    assert old_version != new_version
    seen: list[tuple[int, frozenset]] = []
    stop = threading.Event()

    def search_loop() -> None:
        while not stop.is_set():
            r = httpx.get(f"{app.url}/search", params={"q": "a red circle", "k": 3}, timeout=60)
            hits = r.json().get("results", []) if r.status_code == 200 else []
            seen.append((r.status_code, frozenset(h["payload"]["model_version"] for h in hits)))

    loop = threading.Thread(target=search_loop)
    loop.start()
    try:
        assert reindex_main(["--checkpoint", str(new_ckpt), "--url", app.url]) == 0
        report = json.loads(capsys.readouterr().out)
        poll(lambda: seen[-1], lambda last: last[1] == {new_version}, deadline_s=60)
    finally:
        stop.set()
        loop.join()
    assert report["state"] == "done" and report["missing"] == {} and report["to"] == new_version
    assert report["copied"] + report["present"] == before["count"]
    assert {status for status, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert all(len(v) == 1 for v in versions) and versions[0] == {old_version}
    switch = versions.index({new_version})
    assert all(v == {old_version} for v in versions[:switch]) and all(
        v == {new_version} for v in versions[switch:]
    )

    after = httpx.get(f"{app.url}/stats", timeout=30).json()
    assert (after["model_version"], after["count"]) == (new_version, before["count"])
    assert httpx.get(f"{app.url}/healthz", timeout=30).json()["model_version"] == new_version
    for old_id in kept:  # under its new id, with its file; the old id is gone
        new_id = video_id(content_hash(uploaded[old_id]["path"]), new_version)
        record = httpx.get(f"{app.url}/videos/{new_id}", timeout=30)
        assert record.status_code == 200 and record.json()["payload"]["title"] == uploaded[old_id]["title"]
        assert httpx.get(f"{app.url}/videos/{new_id}/media", timeout=30).status_code == 200
        assert httpx.get(f"{app.url}/videos/{old_id}", timeout=30).status_code == 404
        assert httpx.get(f"{app.url}/videos/{old_id}/media", timeout=30).status_code == 404

    fresh = videos[NUM_VIDEOS + 1]
    r = upload(app.url, fresh["path"], title=fresh["title"])
    for _ in range(3):  # an ingress may learn of the switch from its first upload (503, retry)
        if r.status_code != 503:
            break
        r = upload(app.url, fresh["path"], title=fresh["title"])
    assert r.status_code in (200, 201), r.text
    assert r.json()["id"] == video_id(content_hash(fresh["path"]), new_version)

    app.stop()  # a restart with the old checkpoint in its config follows the active record
    app.start()
    assert httpx.get(f"{app.url}/healthz", timeout=30).json()["model_version"] == new_version

    index_args = ["--config", str(TINY), f"index.path={workdir / 'index'}"]
    assert index_main(["drop", before["collection"], *index_args]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] is True
    assert not (workdir / "index" / before["collection"]).exists()
    assert index_main(["drop", after["collection"], *index_args]) == 1
    assert "active collection" in capsys.readouterr().err
