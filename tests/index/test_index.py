"""Behaviour of the video index, run identically against both backends (Edge on a directory,
qdrant-client local mode for the server backend), checked against brute force in float64 numpy."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from processes import free_port
from qdrant_client import QdrantClient, models

from adaclip.config import IndexConfig
from adaclip.errors import ConfigError, IndexUnavailableError
from adaclip.index import IndexedVideo, VideoIndex, collection_name, open_index, video_id
from adaclip.index import server as server_backend
from adaclip.index.base import FRAMES_VECTOR, KEY_FRAMES, MODES, VIDEO_VECTOR, pack_frames, unpack_frames

D = 32
N = 300
VERSION = "test-v1"
SOURCES = ("youtube", "upload", "archive")
BACKENDS = ("edge", "server")
TOL = 1e-4


# -- data and independent float64 references ---------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_videos(n: int = N, seed: int = 0) -> list[IndexedVideo]:
    """Unit video vectors; 1..8 frames per video with raw (non-unit) norms, and timestamps."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        frames = _unit(rng.normal(size=(k, D))) * rng.uniform(0.5, 2.0, size=(k, 1))
        video = _unit(frames.mean(0) + 0.5 * rng.normal(size=D))
        payload = {
            "source": SOURCES[i % 3],
            "title": f"clip {i}",
            "duration": float(10 + i),
            "frame_timestamps": sorted(rng.uniform(0, 10 + i, size=k).round(3).tolist()),
            "tag": f"user-{i % 5}",
        }
        videos.append(
            IndexedVideo(
                video_id(f"hash{i}", VERSION), video.astype(np.float32), frames.astype(np.float32), payload
            )
        )
    return videos


def make_queries(videos: list[IndexedVideo], n: int = 5, seed: int = 1) -> list[np.ndarray]:
    """Queries near a random stored frame, so that scores spread out as for real captions."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(videos), size=n, replace=False)
    out = []
    for i in picks:
        f = videos[i].frames[rng.integers(len(videos[i].frames))].astype(np.float64)
        out.append(_unit(_unit(f) + 0.8 * rng.normal(size=D) / np.sqrt(D)).astype(np.float32))
    return out


def ref_qscore(
    q: np.ndarray, frames: np.ndarray, temperature: float = 0.1, variant: str = "embedding"
) -> tuple[float, int]:
    """Clip-Hitchhiker query scoring and argmax weight, in float64."""
    t = _unit(q.astype(np.float64))
    x = frames.astype(np.float64)
    s = _unit(x) @ t
    w = np.exp((s - s.max()) / temperature)
    w /= w.sum()
    if variant == "scores":
        return float(w @ s), int(np.argmax(w))
    v = w @ x
    return float(t @ v / np.linalg.norm(v)), int(np.argmax(w))


def ref_cosine(q: np.ndarray, videos: list[IndexedVideo]) -> dict[str, float]:
    """Cosine of the query with each video vector, in float64, by id."""
    cos = _unit(np.stack([v.video for v in videos]).astype(np.float64)) @ _unit(q.astype(np.float64))
    return {v.id: float(c) for v, c in zip(videos, cos, strict=True)}


def ref_rank(scores: dict[str, float], k: int) -> list[str]:
    return sorted(scores, key=lambda i: (-scores[i], i))[:k]


def assert_hits(hits, expected_ids: list[str], scores: dict[str, float]) -> None:
    assert [h.id for h in hits] == expected_ids
    np.testing.assert_allclose([h.score for h in hits], [scores[i] for i in expected_ids], atol=TOL)


def open_test_index(backend: str, path, model_version: str = VERSION, **kw) -> VideoIndex:
    if backend == "edge":
        cfg = IndexConfig(backend="edge", path=path, **kw)
    else:
        cfg = IndexConfig(backend="server", url=":memory:", **kw)
    return open_index(cfg, dim=D, model_version=model_version)


# -- fixtures ---------------------------------------------------------------------------------

VIDEOS = make_videos()
BY_ID = {v.id: v for v in VIDEOS}
QUERIES = make_queries(VIDEOS)


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, tmp_path_factory):
    """An index holding VIDEOS; tests using it must not write."""
    index = open_test_index(request.param, tmp_path_factory.mktemp(request.param))
    index.upsert(VIDEOS)
    index.optimize()
    yield index
    index.close()


@pytest.fixture(params=BACKENDS)
def empty(request, tmp_path):
    index = open_test_index(request.param, tmp_path)
    yield index
    index.close()


# -- tests ------------------------------------------------------------------------------------


def test_video_id_is_deterministic_uuid5_per_model_version():
    a = video_id("abc", "v1")
    assert a == video_id("abc", "v1") and uuid.UUID(a).version == 5
    assert a != video_id("abc", "v2") and a != video_id("abd", "v1")
    assert collection_name("videos", "ViT-B/32@v1") == "videos_ViT-B_32_v1"


def test_upsert_get_exists_delete_count(empty):
    videos = VIDEOS[:10]
    empty.upsert(videos)
    assert empty.count() == 10
    got = empty.get(videos[3].id)
    np.testing.assert_allclose(got.frames, videos[3].frames, atol=1e-6)  # raw norms kept
    np.testing.assert_allclose(got.video, _unit(videos[3].video.astype(np.float64)), atol=1e-6)
    assert got.payload["title"] == "clip 3" and got.payload["tag"] == "user-3"
    assert got.payload["model_version"] == VERSION
    missing = video_id("nothing", VERSION)
    assert empty.get(missing) is None and empty.get("not-a-uuid") is None
    assert empty.exists([videos[0].id, missing, videos[9].id.upper(), "junk"]) == {videos[0].id, videos[9].id}
    assert empty.delete(videos[0].id) is True
    assert empty.delete(videos[0].id) is False and empty.delete("junk") is False
    assert empty.count() == 9 and empty.get(videos[0].id) is None
    stats = empty.stats()
    assert stats["count"] == 9 and stats["dim"] == D and stats["collection"] == f"videos_{VERSION}"
    assert stats["backend"] in BACKENDS


def test_upsert_same_id_twice_keeps_one_point(empty):
    v = VIDEOS[0]
    empty.upsert([v])
    changed = IndexedVideo(v.id, VIDEOS[1].video, VIDEOS[1].frames, {**VIDEOS[1].payload, "title": "new"})
    empty.upsert([changed, changed])
    assert empty.count() == 1
    got = empty.get(v.id)
    assert got.payload["title"] == "new" and got.frames.shape == VIDEOS[1].frames.shape


@pytest.mark.parametrize("k", [1, 10])
def test_fast_matches_bruteforce_cosine_and_moments(loaded, k):
    for q in QUERIES:
        scores = ref_cosine(q, VIDEOS)
        hits = loaded.search(q, k=k, mode="fast")
        assert_hits(hits, ref_rank(scores, k), scores)
        for h in hits:
            _, best = ref_qscore(q, BY_ID[h.id].frames)
            assert h.frame_index == best
            assert h.moment == pytest.approx(BY_ID[h.id].payload["frame_timestamps"][best])


def test_exact_matches_bruteforce_query_scoring(loaded):
    assert len({len(v.frames) for v in VIDEOS}) == 8  # variable frame counts, 1 to 8
    for q in QUERIES:
        ref = {v.id: ref_qscore(q, v.frames) for v in VIDEOS}
        scores = {i: s for i, (s, _) in ref.items()}
        hits = loaded.search(q, k=10, mode="exact")
        assert_hits(hits, ref_rank(scores, 10), scores)
        for h in hits:
            assert h.frame_index == ref[h.id][1]
            assert h.moment == pytest.approx(BY_ID[h.id].payload["frame_timestamps"][ref[h.id][1]])
    # the query-scoring ranking differs from the plain cosine one: exact is not fast in disguise
    fast = [[h.id for h in loaded.search(q, k=10, mode="fast")] for q in QUERIES]
    exact = [[h.id for h in loaded.search(q, k=10, mode="exact")] for q in QUERIES]
    assert fast != exact


def test_exact_scores_variant_matches_bruteforce(loaded):
    """The model's qscore_variant reaches the index: `scores` averages the frame similarities."""
    for q in QUERIES[:3]:
        scores = {v.id: ref_qscore(q, v.frames, 0.5, "scores")[0] for v in VIDEOS}
        hits = loaded.search(q, k=10, mode="exact", temperature=0.5, variant="scores")
        assert_hits(hits, ref_rank(scores, 10), scores)


def test_rerank_with_full_prefetch_equals_exact(loaded):
    for q in QUERIES:
        exact = loaded.search(q, k=10, mode="exact")
        rerank = loaded.search(q, k=10, mode="rerank", candidates=N)
        assert [h.id for h in rerank] == [h.id for h in exact]
        np.testing.assert_allclose([h.score for h in rerank], [h.score for h in exact], atol=1e-6)
        assert [h.moment for h in rerank] == [h.moment for h in exact]


def test_rerank_rescores_the_cosine_prefetch(loaded):
    for q in QUERIES:
        cos = ref_cosine(q, VIDEOS)
        pool = ref_rank(cos, 20)
        scores = {i: ref_qscore(q, BY_ID[i].frames)[0] for i in pool}
        assert_hits(loaded.search(q, k=5, mode="rerank", candidates=20), ref_rank(scores, 5), scores)
    # candidates default to the config's rerank_candidates (200 < N): same as candidates=200
    q = QUERIES[0]
    assert [h.id for h in loaded.search(q, k=5)] == [h.id for h in loaded.search(q, k=5, candidates=200)]


def test_one_request_rerank_equals_fetching_each_candidate(loaded, monkeypatch):
    """A rerank is one index request (the ANN returns the candidates' frames); the result equals
    fetching each candidate's frames on its own and scoring it in float64."""
    calls: list[str] = []

    def counted(name: str, method):
        def call(*args, **kwargs):
            calls.append(name)
            return method(*args, **kwargs)

        return call

    for name in ("nearest", "retrieve", "scan"):
        monkeypatch.setattr(loaded.backend, name, counted(name, getattr(loaded.backend, name)))
    for q in QUERIES:
        calls.clear()
        served = loaded.search(q, k=5, mode="rerank", candidates=30)
        assert calls == ["nearest"]
        pool = [p.id for p in loaded.backend.nearest(q, 30, None, frames=False)]
        one_by_one = {i: loaded.backend.retrieve([i], with_payload=True, with_vectors=True)[0] for i in pool}
        scored = {i: ref_qscore(q, p.frames) for i, p in one_by_one.items()}
        expected = ref_rank({i: s for i, (s, _) in scored.items()}, 5)
        assert_hits(served, expected, {i: s for i, (s, _) in scored.items()})
        for hit in served:
            timestamps = one_by_one[hit.id].payload["frame_timestamps"]
            assert hit.moment == timestamps[scored[hit.id][1]]


@pytest.mark.parametrize("mode", ["fast", "rerank", "exact"])
def test_filters_apply_in_every_mode(loaded, mode):
    filters = {"source": "upload", "tag": "user-1"}
    kept = [v for v in VIDEOS if v.payload["source"] == "upload" and v.payload["tag"] == "user-1"]
    q = QUERIES[0]
    scores = ref_cosine(q, kept) if mode == "fast" else {v.id: ref_qscore(q, v.frames)[0] for v in kept}
    hits = loaded.search(q, k=5, mode=mode, filters=filters, candidates=len(kept))
    assert_hits(hits, ref_rank(scores, 5), scores)
    assert all(h.payload["source"] == "upload" for h in hits)
    assert loaded.search(q, k=5, mode=mode, filters={"title": "clip 7"})[0].id == VIDEOS[7].id
    assert loaded.search(q, k=5, mode=mode, filters={"source": "nowhere"}) == []


def test_bad_inputs_raise_value_error(loaded):
    q = QUERIES[0]
    bad_searches = [
        dict(query=np.ones(D + 1), k=1),
        dict(query=np.ones((1, D)), k=1),
        dict(query=np.zeros(D), k=1),
        dict(query=np.full(D, np.nan), k=1),
        dict(query=q, k=0),
        dict(query=q, k=1, mode="slow"),
        dict(query=q, k=1, candidates=0),
        dict(query=q, k=1, temperature=0.0),
        dict(query=q, k=1, filters={"source": ["a"]}),
    ]
    for kwargs in bad_searches:
        with pytest.raises(ValueError):
            loaded.search(**kwargs)
    v = VIDEOS[0]
    bad_items = [
        IndexedVideo("not-a-uuid", v.video, v.frames, {}),
        IndexedVideo(v.id, v.video[:-1], v.frames, {}),
        IndexedVideo(v.id, v.video, v.frames[:, :-1], {}),
        IndexedVideo(v.id, v.video, np.zeros((0, D)), {}),
        IndexedVideo(v.id, v.video, v.frames, {"frame_timestamps": [0.0] * (len(v.frames) + 1)}),
        IndexedVideo(v.id, v.video, v.frames, {"model_version": "other"}),
        IndexedVideo(v.id, v.video, v.frames, {"when": object()}),
    ]
    for item in bad_items:
        with pytest.raises(ValueError, match=r"shape|UUID|frame_timestamps|model_version|JSON"):
            loaded.upsert([item])
    assert loaded.count() == N  # nothing was written


def test_edge_persists_across_reopen(tmp_path):
    index = open_test_index("edge", tmp_path)
    index.upsert(VIDEOS[:50])
    index.delete(VIDEOS[0].id)
    index.close()
    reopened = open_test_index("edge", tmp_path)
    try:
        assert reopened.count() == 49 and reopened.get(VIDEOS[0].id) is None
        got = reopened.get(VIDEOS[7].id)
        np.testing.assert_allclose(got.frames, VIDEOS[7].frames, atol=1e-6)
        assert got.payload == {**VIDEOS[7].payload, "model_version": VERSION}
        with pytest.raises(IndexUnavailableError, match="owned by one process"):
            open_test_index("edge", tmp_path)  # the shard is locked by `reopened`
    finally:
        reopened.close()
    with pytest.raises(ConfigError, match="dim"):
        open_index(IndexConfig(path=tmp_path), dim=D + 1, model_version=VERSION)
    other = open_test_index("edge", tmp_path, model_version="test-v2")  # one collection per version
    assert other.count() == 0
    other.close()


def test_backends_are_congruent(tmp_path):
    videos = make_videos(120, seed=5)
    edge, server = open_test_index("edge", tmp_path), open_test_index("server", None)
    try:
        for index in (edge, server):
            index.upsert(videos)
        assert edge.count() == server.count() == 120
        for q in make_queries(videos, n=4, seed=6):
            for mode in ("fast", "rerank", "exact"):
                a, b = edge.search(q, k=8, mode=mode), server.search(q, k=8, mode=mode)
                assert [h.id for h in a] == [h.id for h in b]
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=TOL)
                assert [h.moment for h in a] == [h.moment for h in b]
    finally:
        edge.close()
        server.close()


def test_unreachable_server_raises_index_unavailable_quickly(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(IndexUnavailableError, match="unreachable"):
        open_index(IndexConfig(backend="server", url=url, timeout_s=1), dim=D, model_version=VERSION)
    assert time.monotonic() - start < 5
    monkeypatch.setenv("QDRANT_URL", url)  # url=None falls back to the environment
    with pytest.raises(IndexUnavailableError, match=url.split("//")[1]):
        open_index(IndexConfig(backend="server", timeout_s=1), dim=D, model_version=VERSION)
    monkeypatch.delenv("QDRANT_URL")
    with pytest.raises(ConfigError, match="QDRANT_URL"):
        open_index(IndexConfig(backend="server"), dim=D, model_version=VERSION)


# -- windows ----------------------------------------------------------------------------------


def make_windowed(num_videos: int = 12, seed: int = 3) -> list[IndexedVideo]:
    """Videos of 1 to 4 windows, each window its own point (ids as adaclip.encoding makes them)."""
    from adaclip.index import window_id

    rng = np.random.default_rng(seed)
    points = []
    for v in range(num_videos):
        vid, count = video_id(f"long{v}", VERSION), int(rng.integers(1, 5))
        for w in range(count):
            k = int(rng.integers(2, 6))
            frames = _unit(rng.normal(size=(k, D))).astype(np.float32)
            payload = {
                "source": f"video{v}.mp4",
                "frame_timestamps": sorted((w * 60 + rng.uniform(0, 60, size=k)).round(3).tolist()),
                "video_id": vid,
                "window": w,
                "num_windows": count,
                "window_start": 60.0 * w,
                "window_end": 60.0 * (w + 1),
            }
            video = _unit(frames.mean(0)).astype(np.float32)
            points.append(IndexedVideo(window_id(vid, w), video, frames, payload))
    return points


@pytest.mark.parametrize("mode", ["fast", "rerank", "exact"])
def test_windows_group_to_one_result_per_video(empty, mode):
    """Grouped: each video once, scored by its best window, with that window's moment; ungrouped:
    windows, as a float64 brute force over every window ranks them."""
    points = make_windowed()
    empty.upsert(points)
    for q in make_queries(points, n=4, seed=5):
        if mode == "fast":
            window_scores = ref_cosine(q, points)
        else:
            window_scores = {p.id: ref_qscore(q, p.frames)[0] for p in points}
        video_of = {p.id: p.payload["video_id"] for p in points}
        best: dict[str, str] = {}
        for pid in ref_rank(window_scores, len(points)):
            best.setdefault(video_of[pid], pid)
        expected = list(best.values())[:5]
        hits = empty.search(q, k=5, mode=mode, candidates=len(points))
        assert_hits(hits, expected, window_scores)
        assert [h.video for h in hits] == [video_of[i] for i in expected]
        windows = empty.search(q, k=5, mode=mode, candidates=len(points), group=False)
        assert_hits(windows, ref_rank(window_scores, 5), window_scores)


def ref_moment(q: np.ndarray, point: IndexedVideo) -> float:
    """Timestamp of the frame with the highest float64 cosine to `q`."""
    f = point.frames.astype(np.float64)
    cos = f @ q.astype(np.float64) / np.linalg.norm(f, axis=1)
    return point.payload["frame_timestamps"][int(np.argmax(cos))]


def test_fast_reads_its_top_k_with_frames_in_one_request_and_widens_for_repeated_videos(empty, monkeypatch):
    """`fast` asks once for k points with their frame vectors; when windows of one video leave
    fewer than k videos it asks for more, and every hit still carries its window's moment."""
    points = make_windowed()
    empty.upsert(points)
    by_id = {p.id: p for p in points}
    requests: list[int] = []
    nearest = empty.backend.nearest

    def counted(q, limit, filters, frames=True):
        requests.append(limit)
        return nearest(q, limit, filters, frames)

    monkeypatch.setattr(empty.backend, "nearest", counted)
    widened = 0
    for q in make_queries(points, n=6, seed=7):
        requests.clear()
        windows = empty.search(q, k=5, mode="fast", group=False)
        assert requests == [5]  # one request: the top 5 windows with their frames
        assert [h.moment for h in windows] == [ref_moment(q, by_id[h.id]) for h in windows]
        requests.clear()
        videos = empty.search(q, k=5, mode="fast")
        assert len({h.video for h in videos}) == 5
        assert requests[0] == 5 and requests == sorted(requests)
        widened += len(requests) > 1
        assert [h.moment for h in videos] == [ref_moment(q, by_id[h.id]) for h in videos]
    assert widened  # some query's top 5 windows held two windows of one video


def test_a_windowed_video_is_read_and_deleted_whole(empty):
    points = make_windowed()
    empty.upsert(points[::-1])
    vid = next(p.payload["video_id"] for p in points if p.payload["num_windows"] == 4)
    mine = [p for p in points if p.payload["video_id"] == vid]
    got = empty.windows(vid.upper())
    assert [w.id for w in got] == [p.id for p in mine] and got[0].id == vid
    assert [w.payload["window"] for w in got] == [0, 1, 2, 3]
    assert (empty.count(), empty.count_points()) == (12, len(points))  # videos, windows
    assert empty.delete(vid) is True
    assert (empty.count(), empty.count_points()) == (11, len(points) - 4) and empty.windows(vid) == []
    assert empty.delete(vid) is False


def stored_frames(index: VideoIndex, point_id: str) -> dict:
    """The KEY_FRAMES payload value as the engine holds it (read past the facade)."""
    backend = index.backend
    if backend.name == "edge":
        record = backend.shard.retrieve([point_id], with_payload=True, with_vector=False)[0]
    else:
        record = backend.client.retrieve(backend.collection, [point_id], with_payload=True)[0]
    return record.payload[KEY_FRAMES]


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_frame_vectors_halve_storage_and_score_as_their_rounded_values(backend, tmp_path):
    """Frames stored as float16 take half the bytes, come back as float16-rounded values, and exact
    search ranks as a float64 brute force over those rounded frames."""
    stored = {}
    for datatype in ("float32", "float16"):
        index = open_test_index(backend, tmp_path / datatype, frame_datatype=datatype)
        index.upsert(VIDEOS)
        index.optimize()
        packed = stored_frames(index, VIDEOS[7].id)
        stored[datatype] = len(base64.b64decode(packed["data"]))
        assert packed["dtype"] == datatype and packed["shape"] == list(VIDEOS[7].frames.shape)
        if datatype == "float16":
            rounded = [v.frames.astype(np.float16).astype(np.float32) for v in VIDEOS]
            np.testing.assert_array_equal(index.get(VIDEOS[7].id).frames, rounded[7])
            for q in QUERIES:
                scores = {v.id: ref_qscore(q, f)[0] for v, f in zip(VIDEOS, rounded, strict=True)}
                assert_hits(index.search(q, k=10, mode="exact"), ref_rank(scores, 10), scores)
        index.close()
    assert stored == {"float32": VIDEOS[7].frames.size * 4, "float16": VIDEOS[7].frames.size * 2}


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_on_disk_are_memory_mapped_and_search_the_same(backend, tmp_path, monkeypatch):
    """`index.frames_on_disk` keeps the payload, where the frame vectors are, memory-mapped instead
    of loaded into RAM (Edge: the segments' mmap payload storage instead of in_ram_mmap; server: a
    new collection's on_disk_payload), and every mode answers as in RAM."""
    answers, created = [], []
    real = QdrantClient.create_collection  # local mode drops on_disk_payload: see what a server is asked
    monkeypatch.setattr(
        QdrantClient, "create_collection", lambda self, *a, **kw: created.append(kw) or real(self, *a, **kw)
    )
    for on_disk in (False, True):
        index = open_test_index(backend, tmp_path / str(on_disk), frames_on_disk=on_disk)
        index.upsert(VIDEOS)
        index.optimize()
        if backend == "edge":
            want = "mmap" if on_disk else "in_ram_mmap"
            assert payload_storage_types(tmp_path / str(on_disk)) == {want}
        else:
            assert created[-1]["on_disk_payload"] is (True if on_disk else None)  # None: the server's default
        answers.append(
            [
                [(h.id, round(h.score, 6)) for h in index.search(q, k=5, mode=m)]
                for q in QUERIES
                for m in ("fast", "rerank", "exact")
            ]
        )
        index.close()
    assert answers[0] == answers[1]


def payload_storage_types(root) -> set[str]:
    """How the Edge shard under `root` stores payloads, from its segments' own config."""
    return {
        json.loads(f.read_text())["config"]["payload_storage_type"]["type"]
        for f in Path(root).rglob("segment.json")
    }


def test_the_frame_vectors_never_show_in_a_payload(loaded):
    """They are stored in the payload, but every read hands them out as `frames` only."""
    index = loaded
    assert KEY_FRAMES not in index.get(VIDEOS[3].id).payload
    assert all(KEY_FRAMES not in h.payload for m in MODES for h in index.search(QUERIES[0], k=5, mode=m))
    assert all(KEY_FRAMES not in payload for _, payload in index.videos())
    for frames in (True, False):  # a listing leaves the frame vectors where they are
        points = [p for page in index.backend.scan(None, 100, frames=frames) for p in page]
        assert len(points) == len(VIDEOS) and all((p.frames is not None) is frames for p in points)
    with pytest.raises(ValueError, match="reserved"):
        index.upsert([IndexedVideo(VIDEOS[0].id, VIDEOS[0].video, VIDEOS[0].frames, {KEY_FRAMES: 1})])


@pytest.mark.parametrize("datatype", ["float32", "float16"])
@pytest.mark.parametrize("shape", [(12, 64), (5, 7), (1, 1)])  # byte counts with and without base64 padding
def test_frame_vectors_are_stored_as_standard_base64_of_little_endian_values(datatype, shape):
    """The payload value written is the standard library's base64 of the raw values, so points
    written by either encoder read back with the other, values exact (float16 as rounded)."""
    little_endian = "<f4" if datatype == "float32" else "<f2"
    frames = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    raw = frames.astype(little_endian).tobytes()
    packed = pack_frames(frames, datatype)
    assert packed == {"dtype": datatype, "shape": list(shape), "data": base64.b64encode(raw).decode("ascii")}
    expected = np.frombuffer(raw, dtype=little_endian).reshape(shape)
    back = unpack_frames(packed)
    assert back.dtype == np.float32 and np.array_equal(back, expected.astype(np.float32))
    damaged = packed["data"][:4] + "!!!!" + packed["data"][4:]  # a lenient decoder would skip the "!"s
    with pytest.raises(ValueError):  # a damaged payload is an error, not silently read
        unpack_frames({**packed, "data": damaged})


def older_edge_config(datatype: str, on_disk: bool) -> qe.EdgeConfig:
    """The Edge shard config of commit 4e6d146, before frame vectors moved into the payload."""
    frames = qe.EdgeVectorParams(
        size=D,
        distance=qe.Distance.Dot,
        multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
        hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
        datatype={"float32": qe.VectorStorageDatatype.Float32, "float16": qe.VectorStorageDatatype.Float16}[
            datatype
        ],
        memory=qe.Memory.Cold if on_disk else None,
    )
    video = qe.EdgeVectorParams(size=D, distance=qe.Distance.Cosine)
    return qe.EdgeConfig(vectors={VIDEO_VECTOR: video, FRAMES_VECTOR: frames})


def open_older_index(
    backend: str, path, videos: list[IndexedVideo], datatype: str, on_disk: bool, monkeypatch
) -> VideoIndex:
    """An index over a collection written before KEY_FRAMES: frame vectors in a `frames` multivector."""
    name = collection_name("videos", VERSION)
    if backend == "edge":
        (path / name).mkdir()
        shard = qe.EdgeShard.create(str(path / name), older_edge_config(datatype, on_disk))
        points = [
            qe.Point(v.id, {VIDEO_VECTOR: v.video.tolist(), FRAMES_VECTOR: v.frames.tolist()}, v.payload)
            for v in videos
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
        shard.flush()
        shard.close()
    else:
        client = QdrantClient(location=":memory:")
        frames = models.VectorParams(
            size=D,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0),
            datatype=models.Datatype(datatype),
        )
        video = models.VectorParams(size=D, distance=models.Distance.COSINE)
        client.create_collection(name, vectors_config={VIDEO_VECTOR: video, FRAMES_VECTOR: frames})
        points = [
            models.PointStruct(
                id=v.id,
                vector={VIDEO_VECTOR: v.video.tolist(), FRAMES_VECTOR: v.frames.tolist()},
                payload=v.payload,
            )
            for v in videos
        ]
        client.upsert(name, points=points)
        monkeypatch.setattr(server_backend, "make_client", lambda *args: client)  # the same local store
    return open_test_index(backend, path, frames_on_disk=on_disk)


@pytest.mark.parametrize(
    ("backend", "datatype", "on_disk"),
    [("edge", "float32", False), ("edge", "float16", True), ("server", "float32", False)],
)
def test_a_collection_written_before_frames_moved_to_the_payload_is_read_and_extended(
    backend, datatype, on_disk, tmp_path, monkeypatch
):
    """A collection whose frame vectors are a `frames` multivector (as written before KEY_FRAMES)
    opens, answers every mode from them, and takes new points with their frames in the payload;
    its `frames` vector keeps its datatype and storage."""
    old, new = VIDEOS[:200], VIDEOS[200:]
    index = open_older_index(backend, tmp_path, old, datatype, on_disk, monkeypatch)
    assert index.backend.older_frames
    index.upsert(new)
    index.optimize()
    stored = [
        v.frames.astype(np.float16).astype(np.float32) if datatype == "float16" else v.frames for v in old
    ]
    stored += [v.frames for v in new]
    frames = dict(zip([v.id for v in VIDEOS], stored, strict=True))
    for q in QUERIES[:4]:
        scores = {i: ref_qscore(q, f)[0] for i, f in frames.items()}
        assert_hits(index.search(q, k=10, mode="exact"), ref_rank(scores, 10), scores)
        assert_hits(
            index.search(q, k=10, mode="rerank", candidates=len(VIDEOS)), ref_rank(scores, 10), scores
        )
        for h in index.search(q, k=10, mode="fast"):  # its moment: the stored frame nearest the query
            f = frames[h.id].astype(np.float64)
            assert h.frame_index == int(np.argmax(f @ q / np.linalg.norm(f, axis=1)))
    np.testing.assert_array_equal(index.get(old[0].id).frames, stored[0])
    np.testing.assert_array_equal(index.get(new[0].id).frames, new[0].frames)
    index.close()
    if backend == "edge":  # every segment, rewritten by the optimiser or not, as configured before
        storage = "ChunkedMmap" if on_disk else "InRamChunkedMmap"
        segments = [json.loads(f.read_text())["config"] for f in tmp_path.rglob("segment.json")]
        assert {
            (c["vector_data"][FRAMES_VECTOR]["datatype"], c["vector_data"][FRAMES_VECTOR]["storage_type"])
            for c in segments
        } == {(datatype, storage)}


def test_float16_frames_refuse_values_beyond_its_range(tmp_path):
    """float16 holds at most 65504: larger frame values are refused, not stored as inf."""
    index = open_test_index("edge", tmp_path, frame_datatype="float16")
    big = IndexedVideo(VIDEOS[0].id, VIDEOS[0].video, VIDEOS[0].frames * 1e6, VIDEOS[0].payload)
    with pytest.raises(ValueError, match="float16"):
        index.upsert([big])
    assert index.count() == 0
    index.close()


def test_one_of_two_racing_writers_creates_the_video(empty):
    """Both writers checked before either wrote (the race across replicas): the insert-only write
    of window 0 keeps the first, and only its writer hears `created`."""
    first, second = (
        VIDEOS[0],
        IndexedVideo(VIDEOS[0].id, VIDEOS[1].video, VIDEOS[1].frames, {"title": "late"}),
    )
    real_get, calls = empty.get, []

    def get_after_both_checked(point_id):
        calls.append(point_id)
        return None if len(calls) in (1, 3) else real_get(point_id)  # each writer's check sees nothing

    empty.get = get_after_both_checked
    created_a, payload_a = empty.insert([first])
    created_b, payload_b = empty.insert([second])
    empty.get = real_get
    assert (created_a, created_b) == (True, False)
    assert payload_a == payload_b and payload_b["title"] == "clip 0"
    np.testing.assert_allclose(empty.get(first.id).frames, first.frames, atol=1e-6)
    assert empty.count() == 1
