"""`adaclip index snapshot|restore` on the embedded Edge store: a restored copy answers every search
exactly as the original, and a restore never overwrites a collection unasked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adaclip.config import load_config
from adaclip.encoding import load_encoder_model
from adaclip.index import IndexedVideo, open_index, video_id
from adaclip_cli.index import main

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def test_snapshot_then_restore_gives_the_same_index(tmp_path, capsys):
    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=0)
    dim, version = int(model.embed_dim), model.model_version
    rng = np.random.default_rng(4)
    items = []
    for i in range(40):
        frames = rng.normal(size=(4, dim)).astype(np.float32)
        video = (frames.mean(0) / np.linalg.norm(frames.mean(0))).astype(np.float32)
        items.append(IndexedVideo(video_id(f"v{i}", version), video, frames, {"source": f"v{i}.mp4"}))
    original, copy = tmp_path / "index", tmp_path / "restored"
    with open_index(cfg.index.model_copy(update={"path": original}), dim, version) as index:
        index.upsert(items)
    snap = tmp_path / "backup" / "videos.snap"

    assert main(["snapshot", "--out", str(snap), "--config", str(TINY), f"index.path={original}"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == snap.stat().st_size > 0
    assert main(["restore", str(snap), "--config", str(TINY), f"index.path={copy}"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 40
    assert main(["restore", str(snap), "--config", str(TINY), f"index.path={copy}"]) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert main(["restore", str(snap), "--force", "--config", str(TINY), f"index.path={copy}"]) == 0

    queries = rng.normal(size=(5, dim)).astype(np.float32)
    with (
        open_index(cfg.index.model_copy(update={"path": original}), dim, version) as a,
        open_index(cfg.index.model_copy(update={"path": copy}), dim, version) as b,
    ):
        for q in queries:
            for mode in ("fast", "exact"):
                left, right = a.search(q, 10, mode), b.search(q, 10, mode)
                assert [h.id for h in left] == [h.id for h in right]
                np.testing.assert_allclose([h.score for h in left], [h.score for h in right], atol=1e-6)
