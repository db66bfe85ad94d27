"""Load: 32 clients searching and 4 uploading for 60 s against `adaclip serve` on 127.0.0.1. No 5xx
but the documented 503 (with Retry-After), every acknowledged upload searchable afterwards, the
latency percentiles reported, and the service's memory bounded (resident set of every process it
started, before and after)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from faultkit import ServeApp
from processes import session_processes

pytestmark = pytest.mark.slow

SEARCHERS, UPLOADERS, SECONDS = 32, 4, 60.0
MEMORY_GROWTH_BYTES = 1 << 30  # the whole app may grow by at most 1 GiB under this load
QUERIES = ["a small red circle", "a large blue square", "a green triangle moving left", "a yellow star"]


def resident_bytes(sid: int) -> int:
    """Resident set size of every process of session `sid` (from /proc)."""
    total = 0
    for pid in session_processes(sid):
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * 4096
    return total


async def run_load(url: str, videos: list[Path]) -> dict:
    stop = time.monotonic() + SECONDS
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bad: list[str] = []
    acknowledged: set[str] = set()

    def record(r: httpx.Response) -> None:
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500 and not (r.status_code == 503 and "retry-after" in r.headers):
            bad.append(f"{r.status_code} {r.request.method} {r.request.url.path}: {r.text[:200]}")

    async def searcher(client: httpx.AsyncClient, i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            params = {"q": QUERIES[(i + n) % len(QUERIES)], "k": 10, "mode": ("rerank", "fast")[n % 2]}
            start = time.perf_counter()
            r = await client.get(f"{url}/search", params=params)
            latencies.append(time.perf_counter() - start)
            record(r)
            n += 1

    async def uploader(client: httpx.AsyncClient, i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            path = videos[(i + UPLOADERS * n) % len(videos)]  # repeats after a while: 200, not 201
            r = await client.post(
                f"{url}/videos", files={"file": (path.name, path.read_bytes(), "video/mp4")}
            )
            record(r)
            if r.status_code in (200, 201):
                acknowledged.add(r.json()["id"])
            n += 1

    limits = httpx.Limits(max_connections=SEARCHERS + UPLOADERS)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(
            *(searcher(client, i) for i in range(SEARCHERS)), *(uploader(client, i) for i in range(UPLOADERS))
        )
    return {"latencies": latencies, "statuses": statuses, "bad": bad, "acknowledged": acknowledged}


def test_load_gives_no_unexpected_5xx_and_bounded_memory(launcher, tmp_path, fault_corpus):
    app = ServeApp(launcher, tmp_path)
    app.start()
    app.wait_ready()
    videos = sorted(fault_corpus.glob("*.mp4"))
    before = resident_bytes(app.pid)
    result = asyncio.run(run_load(app.url, videos))
    after = resident_bytes(app.pid)
    ms = np.array(result["latencies"]) * 1000
    p50, p99 = np.percentile(ms, [50, 99])
    print(
        f"\nload {SEARCHERS} searching + {UPLOADERS} uploading for {SECONDS:g} s: {len(ms)} searches, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; statuses {result['statuses']}; "
        f"{len(result['acknowledged'])} videos acknowledged; memory {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
    assert not result["bad"], result["bad"][:5]
    assert len(ms) > SEARCHERS and result["acknowledged"], result["statuses"]
    for vid in result["acknowledged"]:  # acknowledged means stored and searchable
        assert httpx.get(f"{app.url}/videos/{vid}", timeout=30).status_code == 200
    assert after - before < MEMORY_GROWTH_BYTES, (before, after)
