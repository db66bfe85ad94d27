"""Moving an index to a new model: the active record (Edge file, Qdrant alias), reindex passes
from kept files, and dropping the old collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaclip.config import IndexConfig, load_config
from adaclip.encoding import (
    content_hash,
    decode_windows_for_model,
    encode_decoded,
    load_active_model,
    load_encoder_model,
    to_indexed,
)
from adaclip.errors import ConfigError
from adaclip.index import open_index, video_id
from adaclip.index.active import ActiveModel, alias_target, drop_collection, switch_alias
from adaclip.index.server import ServerBackend
from adaclip.reindex import reindex_pass, remove_deleted

DIM = 64  # the tiny model's embedding width
TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    from adaclip.data.synth import make_corpus

    out = tmp_path_factory.mktemp("reindex")
    make_corpus(out, videos=3, seed=11)
    return sorted(out.glob("**/*.mp4"))


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY)


@pytest.fixture(scope="module")
def models(cfg):
    """Two models of one config that differ only in their weights."""
    return load_encoder_model(cfg, seed=1), load_encoder_model(cfg, seed=2)


def ingest(index, model, cfg, path: Path) -> str:
    sha = content_hash(path)
    windows = [
        to_indexed(w, sha, model.model_version, str(path), path.stem, {"n": 1})
        for w in encode_decoded(model, decode_windows_for_model(path, cfg))
    ]
    index.insert(windows)
    return video_id(sha, model.model_version)


def test_versions_differ_with_weights_only(models):
    assert models[0].model_version != models[1].model_version


def test_edge_active_record_round_trip_and_drop(tmp_path, models, cfg):
    icfg = IndexConfig(path=tmp_path)
    a = open_index(icfg, DIM, models[0].model_version)
    b = open_index(icfg, DIM, models[1].model_version)
    assert a.backend.read_active(icfg.collection_prefix) is None
    first = ActiveModel(collection=a.backend.collection, model_version=a.model_version, seed=1)
    a.backend.write_active(icfg.collection_prefix, first)
    assert b.backend.read_active(icfg.collection_prefix) == first  # one record per store
    second = ActiveModel(collection=b.backend.collection, model_version=b.model_version, seed=2)
    b.backend.write_active(icfg.collection_prefix, second)
    assert a.backend.read_active(icfg.collection_prefix) == second
    assert load_active_model(cfg, second)[1].model_version == models[1].model_version
    with pytest.raises(ConfigError, match="now gives model"):
        load_active_model(cfg, second.model_copy(update={"seed": 3}))
    a.close()
    b.close()
    with pytest.raises(ConfigError, match="active collection"):
        drop_collection(icfg, second.collection)
    assert drop_collection(icfg, "../" + tmp_path.name) is False  # only collections of the store
    assert drop_collection(icfg, "no_such_collection") is False
    assert drop_collection(icfg, first.collection) is True
    assert not (tmp_path / first.collection).exists() and (tmp_path / second.collection).is_dir()


def test_server_active_record_is_an_alias_switched_in_one_step():
    backend = ServerBackend(":memory:", None, "videos_a", 8)
    assert backend.read_active("videos") is None
    a = ActiveModel(collection="videos_a", model_version="a", checkpoint="/m/a.pt")
    backend.write_active("videos", a)
    assert backend.read_active("videos") == a and alias_target(backend.client, "videos") == "videos_a"
    backend.client.create_collection("videos_b", vectors_config={})  # in the same local store
    b = ActiveModel(collection="videos_b", model_version="b", seed=5)
    switch_alias(backend.client, "videos", b)
    assert backend.read_active("videos") == b
    assert [x.alias_name for x in backend.client.get_aliases().aliases] == ["videos"]
    backend.close()


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_reindex_pass_reencodes_every_video_with_the_new_model(tmp_path, corpus, cfg, models, backend):
    old_model, new_model = models
    icfg = IndexConfig(path=tmp_path) if backend == "edge" else IndexConfig(backend="server", url=":memory:")
    old = open_index(icfg, DIM, old_model.model_version)
    new = open_index(icfg, DIM, new_model.model_version)
    files = {ingest(old, old_model, cfg, p): p for p in corpus}
    missing_one = next(iter(files))

    def find_media(vid: str, payload: dict) -> Path | None:
        return None if vid == missing_one else files[vid]

    report = reindex_pass(old, new, new_model, cfg, find_media)
    assert (report.copied, report.present) == (2, 0)
    assert list(report.missing) == [missing_one] and "no kept file" in report.missing[missing_one]
    report = reindex_pass(old, new, new_model, cfg, lambda vid, payload: files[vid])
    assert (report.copied, report.present, report.missing) == (1, 2, {})  # resumes where it stopped
    for old_id, path in files.items():
        new_id = report.moved[old_id]
        assert new_id == video_id(content_hash(path), new_model.model_version) != old_id
        stored = new.windows(new_id)
        expected = encode_decoded(new_model, decode_windows_for_model(path, cfg))
        assert len(stored) == len(expected)
        for got, want in zip(stored, expected, strict=True):
            np.testing.assert_allclose(got.frames, want.frames, atol=1e-5)
            assert got.payload["model_version"] == new_model.model_version
            assert got.payload["title"] == path.stem and got.payload["metadata"] == {"n": 1}
    gone = next(iter(files))
    old.delete(gone)
    final = reindex_pass(old, new, new_model, cfg, lambda vid, payload: files[vid])
    assert remove_deleted(new, final.moved) == [report.moved[gone]]
    assert new.count() == old.count() == 2
    old.close()
    new.close()
