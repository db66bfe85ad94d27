"""Shared fixtures: one synthetic corpus and one local Ray cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """A small deterministic synthetic corpus of real mp4 files with annotations.jsonl."""
    from adaclip.data.synth import make_corpus

    return make_corpus(tmp_path_factory.mktemp("synth"), videos=24, seed=7)


@pytest.fixture(scope="session")
def tiny_overrides(synth_corpus, tmp_path_factory) -> list[str]:
    """Overrides that point configs/tiny.yaml at the session corpus and a scratch output dir."""
    out = tmp_path_factory.mktemp("runs")
    return [
        f"data.annotations={synth_corpus / 'annotations.jsonl'}",
        f"data.video_root={synth_corpus}",
        f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'tiny'}",
    ]


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every Ray test of the session (2 CPUs, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()
