"""Fixtures of the fault tests (helpers in faultkit.py; pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import CORPUS_VIDEOS, Launcher


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    started = Launcher()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture(scope="session")
def fault_corpus(tmp_path_factory) -> Path:
    """CORPUS_VIDEOS distinct small synthetic videos (the `videos/` folder of a corpus)."""
    from adaclip.data.synth import make_corpus

    return make_corpus(tmp_path_factory.mktemp("fault-corpus"), videos=CORPUS_VIDEOS, seed=29) / "videos"
