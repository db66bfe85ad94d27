"""Benchmarks run at toy sizes and write their JSON (its shape, not timings)."""

import json

import torch

from benchmarks import agreement_bench, speedup_bench
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
    assert (tmp_path / "agreement.png").stat().st_size > 0
