"""The ingress's index threads, injected with a stuck `exact` search (no Ray: the class itself):
health checks, writes and fast searches still answer, and exact searches are bounded (503 busy)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import load_config
from adaclip.errors import IndexBusyError
from adaclip.index import IndexedVideo, video_id
from serve.index_service import EXACT_QUEUE, IndexService

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def point(i: int, version: str, dim: int) -> IndexedVideo:
    rng = np.random.default_rng(i)
    frames = rng.normal(size=(4, dim)).astype(np.float32)
    video = frames.mean(0) / np.linalg.norm(frames.mean(0))
    return IndexedVideo(video_id(f"h{i}", version), video.astype(np.float32), frames, {"source": f"v{i}"})


def test_a_stuck_exact_search_blocks_neither_health_nor_writes_and_exact_is_bounded(tmp_path):
    cfg = load_config(TINY, [f"index.path={tmp_path / 'index'}"])
    service = IndexService({"config": cfg.model_dump(mode="json"), "checkpoint": None, "seed": 0})
    dim = int(service.serving.model.embed_dim)
    release = threading.Event()
    search = service._index.search

    def stuck(*args, **kwargs):
        if args[2] == "exact":
            assert release.wait(60), "never released"
        return search(*args, **kwargs)

    service._index.search = stuck

    async def scenario() -> None:
        await service.add([point(0, service.serving.version, dim)])
        exact = [asyncio.create_task(service.search("q", 3, "exact")) for _ in range(EXACT_QUEUE)]
        for _ in range(100):  # scheduling points until all have started (none can finish)
            if service._exact_waiting == EXACT_QUEUE:
                break
            await asyncio.sleep(0)
        with pytest.raises(IndexBusyError):
            await service.search("q", 3, "exact")
        health = await asyncio.wait_for(service.health(), 30)
        created, _ = await asyncio.wait_for(service.add([point(1, service.serving.version, dim)]), 30)
        fast = await asyncio.wait_for(service.search("q", 3, "fast"), 30)
        assert health["points"] >= 1 and created and len(fast) == 2
        assert not any(task.done() for task in exact)  # all still stuck meanwhile
        release.set()
        assert all(len(hits) == 2 for hits in await asyncio.gather(*exact))

    asyncio.run(scenario())
