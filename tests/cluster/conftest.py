"""Fixtures of the cluster tests (helpers in clusterkit.py; pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterkit import LocalCluster


@pytest.fixture
def local_cluster(tmp_path) -> Iterator[LocalCluster]:
    """A multi-node Ray cluster on 127.0.0.1 that the test starts node by node; stopped at the end
    (every process of every node's session), whatever the test did."""
    cluster = LocalCluster(Path(tmp_path))
    try:
        yield cluster
    finally:
        cluster.stop()
