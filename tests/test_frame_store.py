"""The decoded-frame store on a local Ray: written once by Ray Data, reused, invalidated when a
decode setting or a file changes; bad files (corrupt, empty, one that kills its worker) are
recorded and skipped; the training stream reads it in a new order every epoch."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import load_config
from adaclip.data.annotations import read_annotations
from adaclip.video.settings import DecodeSettings
from ray_jobs.frame_store import WORKER_DIED, decode_rows, ensure_store

pytestmark = pytest.mark.slow

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def crash_on_poison(batch, settings, seed=None):
    """decode_rows, except that a file named poison*.mp4 kills the worker process (as a hostile
    file crashing a decoder would)."""
    if any(Path(str(p)).name.startswith("poison") for p in batch["path"]):
        os._exit(1)
    return decode_rows(batch, settings, seed)


@pytest.fixture(scope="module")
def corpus(synth_corpus, tmp_path_factory):
    """A copy of the session corpus where three training videos are corrupt, empty and poison."""
    root = tmp_path_factory.mktemp("store") / "corpus"
    shutil.copytree(synth_corpus, root)
    cfg = load_config(TINY, [f"data.annotations={root / 'annotations.jsonl'}", f"data.video_root={root}"])
    records = read_annotations(cfg.data, "train")
    records[0].path.write_bytes(os.urandom(5000))  # corrupt
    records[1].path.write_bytes(b"")  # empty
    poison = records[2].path.with_name("poison.mp4")
    records[2].path.rename(poison)
    records[2] = dataclasses.replace(records[2], path=poison)
    return cfg, records


def test_store_is_written_once_reused_and_keyed_by_settings_and_files(ray_local, corpus, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg, records = corpus
    settings = DecodeSettings.from_config(cfg, train=False)
    store = ensure_store(records, settings, tmp_path, decode_fn=crash_on_poison)
    assert store.built and store.videos == len(records) and store.decoded == len(records) - 3
    assert set(store.failures) == {str(r.path) for r in records[:3]}
    assert store.failures[str(records[2].path)] == WORKER_DIED
    assert all(
        store.failures[str(r.path)] and store.failures[str(r.path)] != WORKER_DIED for r in records[:2]
    )
    rows = store.dataset().take_all()
    good = sorted(r["video_index"] for r in rows if not r["error"])
    assert good == list(range(3, len(records)))
    row = next(r for r in rows if r["video_index"] == 3)
    expected = settings.decode(records[3].path)
    np.testing.assert_array_equal(row["clip_frames"], expected.clip_frames)
    np.testing.assert_array_equal(row["selector_frames"], expected.selector_frames)

    again = ensure_store(records, settings, tmp_path, decode_fn=crash_on_poison)
    assert not again.built and again.path == store.path and again.failures == store.failures

    other = ensure_store(records[3:], settings.model_copy(update={"clip_size": 16}), tmp_path)
    assert other.built and other.path != store.path
    assert other.dataset().take(1)[0]["clip_frames"].shape[1:3] == (16, 16)

    records[4].path.write_bytes(records[5].path.read_bytes())  # a changed file: a new store
    changed = ensure_store(records[3:], settings.model_copy(update={"clip_size": 16}), tmp_path)
    assert changed.built and changed.path != other.path


def test_training_stream_changes_order_every_epoch(ray_local, synth_corpus, tmp_path):
    from ray_jobs.data import train_dataset

    cfg = load_config(
        TINY,
        [
            f"data.annotations={synth_corpus / 'annotations.jsonl'}",
            f"data.video_root={synth_corpus}",
            f"data.cache_dir={tmp_path}",
        ],
    )
    records = read_annotations(cfg.data, "train")
    ds, store = train_dataset(records, cfg)
    assert store is not None and not store.failures
    orders = [tuple(b["video_index"].tolist()) for b in (ds.take_batch(len(records)) for _ in range(4))]
    assert all(sorted(o) == list(range(len(records))) for o in orders)
    assert len(set(orders)) > 1
