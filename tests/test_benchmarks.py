"""Benchmarks run at toy sizes and write their JSON (its shape, not timings)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from adaclip.video.probe import probe_video
from benchmarks import agreement_bench, model_bench, moment_bench, speedup_bench
from benchmarks.run import main as bench_main


def test_query_scoring_kernel_matches_an_independent_float64_computation():
    g = torch.Generator().manual_seed(3)
    text = speedup_bench.unit(torch.randn(5, 8, generator=g))
    frames = speedup_bench.unit(torch.randn(700, 4, 8, generator=g))
    t, x = text.double(), frames.double()
    s = torch.einsum("qd,vfd->qvf", t, x)
    w = torch.softmax(s / 0.1, dim=-1)
    pooled = torch.einsum("qvf,vfd->qvd", w, x)
    expected = (pooled * t[:, None]).sum(-1) / pooled.norm(dim=-1)  # (Q, V)
    got = speedup_bench.qscore_scores(text, frames, 0.1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_adaclip_bench_quick_speedup_json(tmp_path, capsys):
    """`adaclip bench --quick --only speedup --json` at a toy size: one object per section, the
    machine, versions and date (the shape, not the timings)."""
    out = tmp_path / "bench.json"
    args = ["--videos", "300", "10000000000", "--frames", "4", "--dim", "16", "--queries", "1", "3"]
    cmd = ["--quick", "--only", "speedup", "--json", "--out", str(out), "--", *args, "--repeats", "1"]
    assert bench_main(cmd) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert {"machine", "versions", "date", "load_average", "speedup"} <= set(printed)
    assert {"cpu", "cores", "gpu"} <= set(printed["machine"]) and printed["versions"]["torch"]
    assert "search" not in printed  # --only
    result = printed["speedup"]["speedup"]
    assert {"speedup", "skipped", "machine"} <= set(result)
    rows = result["speedup"]
    assert [(r["device"], r["videos"], r["queries"]) for r in rows] == [("cpu", 300, 1), ("cpu", 300, 3)]
    for r in rows:
        assert r["fast_ms"] > 0 and r["qscore_ms"] > 0 and r["speedup"] > 0
    assert len(result["skipped"]) == 1 and "10,000,000,000 videos" in result["skipped"][0]


def test_agreement_json_shape(tmp_path):
    """The trained-model agreement benchmark at a toy size, on a random model (shape, not figures)."""
    out = tmp_path / "agreement.json"
    args = ["--random-model", "--videos", "24", "--queries", "6", "--candidates", "5", "24"]
    args += ["--timed-exact", "2", "--workers", "1", "--corpus", str(tmp_path / "corpus"), "--out", str(out)]
    assert agreement_bench.main(args) == 0
    result = json.loads(out.read_text())
    assert (result["videos"], result["queries"]) == (24, 6)
    assert [r["candidates"] for r in result["rerank"]] == [5, 24]
    assert result["rerank"][1]["top10_identical_share"] == 1.0  # every video a candidate: rerank = exact
    for row in [result["fast"], result["exact"], *result["rerank"]]:
        assert {"p50_ms", "p99_ms", "R1"} <= set(row)
    assert all(row["engine_read_p50_ms"] > 0 for row in result["rerank"])
    assert (tmp_path / "agreement.png").stat().st_size > 0
    # every video a candidate: every query's exact top 10 is reachable; the ANN (brute force at
    # this size) loses nothing, so the measured shares are the reachable ones
    assert result["rerank"][1]["top10_reachable_share"] == 1.0
    for row in result["rerank"]:
        assert row["top10_identical_share"] == row["top10_reachable_share"]
    assert result["candidates_for_99"] == (5 if result["rerank"][0]["top10_identical_share"] >= 0.99 else 24)
    assert result["frames_on_disk"] is False


def test_candidates_needed_is_the_worst_fast_rank_of_exacts_top_10():
    rng = np.random.default_rng(5)
    queries, videos = rng.standard_normal((3, 4)), rng.standard_normal((30, 4)) * rng.uniform(0.5, 2, (30, 1))
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        videos / np.linalg.norm(videos, axis=1, keepdims=True)
    ).T
    order = np.argsort(-cos, axis=1)  # fast's ranking
    exact = [list(order[0, :10]), list(order[1, [0, 1, 2, 3, 4, 5, 6, 7, 8, 20]]), list(order[2, 5:15])]
    assert agreement_bench.candidates_needed(queries, videos, exact).tolist() == [10, 21, 15]


def test_moment_bench_json_and_long_videos(tmp_path):
    """The moment benchmark at a toy size on a random model: the JSON's shape and ranges, and the
    long videos themselves: clip intervals tile each file, whose probed length is the sum of its
    clips, and the frames recorded as showing a clip's object are that clip's frames."""
    out, corpus = tmp_path / "moments.json", tmp_path / "corpus"
    args = ["--random-model", "--videos", "2", "--clips-per-video", "3", "--fps", "8", "--windows", "6"]
    assert moment_bench.main([*args, "--corpus", str(corpus), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["long_videos"], result["clips_per_video"], result["queries"]) == (2, 3, 6)
    assert (result["mean_clip_s"], result["mean_video_s"]) == (6.0, 18.0)  # 48-frame clips at 8 fps
    arms = {a["arm"]: a for a in result["arms"]}
    assert list(arms) == ["windows 6 s", "one point"]
    assert (arms["windows 6 s"]["points"], arms["one point"]["points"]) == (6, 2)  # 3 windows a video
    assert arms["windows 6 s"]["object_sampled"] == 100.0  # 16 of each 48 frames: every 3rd
    for arm in arms.values():
        assert list(arm["modes"]) == ["fast", "rerank", "exact"]
        assert 0 <= arm["object_kept"] <= arm["object_sampled"] <= 100
        for m in arm["modes"].values():
            assert 0 <= m["moment_in_clip"] <= m["video_R1"] <= m["video_R5"] <= 100
            assert m["moment_within_tolerance"] <= m["video_R1"] and m["p50_ms"] > 0
            assert (m["mean_abs_error_s"] is None) == (m["video_R1"] == 0)
            assert m["mean_abs_error_s"] is None or 0 <= m["median_abs_error_s"] <= 18

    meta = json.loads((corpus / moment_bench.MANIFEST).read_text())
    clip_meta = {i["id"]: i for i in json.loads((corpus / "clips" / "corpus.json").read_text())["items"]}
    shows = {  # each clip's first frame showing its object, as its own file has it
        i: list(moment_bench.read_frames(corpus / "clips" / c["video"]))[c["informative"][0]].astype(float)
        for i, c in clip_meta.items()
    }
    placed = []
    for video in meta["long_videos"]:
        path, clips = corpus / video["video"], video["clips"]
        info = probe_video(path)
        assert [c["frames"][0] for c in clips] == [0] + [c["frames"][1] for c in clips[:-1]]
        assert clips[-1]["frames"][1] == video["frames"] == info.num_frames == 3 * 48
        assert info.duration == sum(c["interval"][1] - c["interval"][0] for c in clips) == 18.0
        frames = list(moment_bench.read_frames(path))
        for c in clips:
            assert c["interval"] == [c["frames"][0] / 8, c["frames"][1] / 8]
            first, stop = clip_meta[c["id"]]["informative"]
            assert c["visible"] == [c["frames"][0] + first, c["frames"][0] + stop]
            diffs = {i: np.abs(frames[c["visible"][0]] - f).mean() for i, f in shows.items()}
            assert diffs[c["id"]] < 5 and min(diffs, key=diffs.get) == c["id"]  # re-encoded, near-lossless
            placed.append(c["id"])
    assert sorted(placed) == sorted(clip_meta)  # every clip used once


def test_model_bench_rows_on_the_tiny_model(tmp_path):
    """The model's own training step, encoding and text rates on CPU at a toy size (shape, not
    figures): every row timed, the served encoding kept to K of N frames."""
    out = tmp_path / "model.json"
    assert (
        model_bench.main(
            [
                "--config",
                "configs/tiny.yaml",
                "--device",
                "cpu",
                "--batch",
                "2",
                "--steps",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["model"]["clip"] == "adaclip-tiny"
    parts = [(r["part"], r["precision"], r["batch"]) for r in result["rows"]]
    k, n = result["model"]["top_k"], result["model"]["num_frames"]
    assert parts == [
        ("train step", "fp32", 2),
        (f"encode K={k} of N (served)", "fp32", 2),
        (f"encode all N={n} frames", "fp32", 2),
        ("text query", "fp32", 1),
        ("text query", "fp32", 2),
    ]
    assert all(r["ms"] > 0 and r["per_s"] > 0 for r in result["rows"])


@pytest.mark.slow
def test_serve_bench_measures_both_doors_with_direct_ingress(tmp_path):
    """serve_bench at a toy size with `--direct-ingress`, in a process (and Ray) of its own: the
    floor and `fast` answered through the proxy and through the ingress replica's own HTTP server,
    without errors, and the direct door costs the proxy nothing (shape, not figures)."""
    out = tmp_path / "serve.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="rayb-", dir="/tmp"), RAY_USAGE_STATS_ENABLED="0")
    args = ["--videos", "300", "--queries", "10", "--exact-queries", "1", "--clients", "1", "2"]
    args += [
        "--load-seconds",
        "5",
        "--uploads",
        "1",
        "--upload-clients",
        "1",
        "--skip",
        "index",
        "--skip",
        "ingest",
    ]
    cmd = [sys.executable, "-m", "benchmarks.serve_bench", *args, "--direct-ingress", "--out", str(out)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    serve = json.loads(out.read_text())["serve"]
    for clients in ("1_clients", "2_clients"):
        proxied, direct = serve[clients], serve["direct_ingress"][clients]
        for figures in (
            proxied["floor_ingress_only"],
            proxied["fast"],
            direct["floor_ingress_only"],
            direct["fast"],
        ):
            assert figures["errors"] == 0 and figures["n"] >= 1
        assert direct["fast"]["handler_p50_ms"] > 0
        cpu = [
            figures.get("cpu_ms_per_request", {}).get("proxy")
            for figures in (direct["fast"], proxied["fast"])
        ]
        if None not in cpu:  # where Ray's actor table could be read
            assert cpu[0] < cpu[1]
