"""Bulk ingestion with Ray Data: a small library with corrupt files, a duplicate and a link out of
the root; resumable (a second run decodes nothing new); annotation files; same vectors as Serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import load_config
from adaclip.encoding import content_hash, decode_for_model, encode_decoded, load_encoder_model
from adaclip.index import open_index, video_id

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
GOOD = 5


def corpus_dir(synth_corpus: Path) -> Path:
    return synth_corpus.parent if synth_corpus.is_file() else synth_corpus


@pytest.fixture(scope="module")
def library(synth_corpus, tmp_path_factory) -> Path:
    """GOOD real videos, one byte-identical copy, three broken files and a link leaving the root."""
    videos = sorted((corpus_dir(synth_corpus) / "videos").glob("*.mp4"))
    lib = tmp_path_factory.mktemp("library")
    (lib / "sub").mkdir()
    for v in videos[:GOOD]:
        shutil.copy(v, lib / "sub" / v.name)
    shutil.copy(videos[0], lib / "copy_of_first.mp4")
    (lib / "empty.mp4").write_bytes(b"")
    (lib / "notes.mp4").write_text("not a video\n" * 50)
    (lib / "cut.mp4").write_bytes(videos[1].read_bytes()[: videos[1].stat().st_size // 2])
    outside = tmp_path_factory.mktemp("outside") / "secret.mp4"
    shutil.copy(videos[GOOD], outside)
    (lib / "link.mp4").symlink_to(outside)
    return lib


def run(capsys, *argv: str) -> dict:
    from ray_jobs.ingest import main

    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_bulk_ingest_is_resumable_and_skips_bad_files(ray_local, library, tmp_path, capsys):
    index_dir = tmp_path / "index"
    args = (str(library), "--config", str(TINY), f"index.path={index_dir}")
    first = run(capsys, *args)
    assert (
        first["files"] == GOOD + 5
        and first["rejected"] == 1
        and first["rejected_paths"][0].endswith("link.mp4")
    )
    assert (first["ingested"], first["duplicates"], first["failed"], first["count"]) == (GOOD, 1, 3, GOOD)
    assert {Path(p).name for p in first["failures"]} == {"empty.mp4", "notes.mp4", "cut.mp4"}

    second = run(capsys, *args)
    assert (second["ingested"], second["skipped"], second["count"]) == (0, GOOD + 1, GOOD)

    # the stored vectors are the ones the Serve app computes for the same file (same code, same seed)
    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=0)
    path = library / "sub" / sorted(p.name for p in (library / "sub").iterdir())[2]
    (expected,) = encode_decoded(model, [decode_for_model(path, cfg)])
    with open_index(
        cfg.index.model_copy(update={"path": index_dir}), model.embed_dim, model.model_version
    ) as index:
        stored = index.get(video_id(content_hash(path), model.model_version))
    assert stored is not None and stored.payload["source"] == f"sub/{path.name}"
    np.testing.assert_allclose(stored.video, expected.video, atol=1e-5)
    np.testing.assert_allclose(stored.frames, expected.frames, atol=1e-5)
    assert stored.payload["frame_timestamps"] == pytest.approx(expected.frame_timestamps.tolist())


@pytest.mark.slow
def test_bulk_ingest_stores_a_long_video_as_the_upload_path_does(ray_local, tmp_path, capsys):
    """A 150 s video becomes three 60 s windows ([0, 60), [60, 120), [120, 150)) with the vectors the
    serving path computes for each window; a second run skips it whole."""
    import formats

    from adaclip.encoding import decode_windows_for_model, to_indexed

    lib = tmp_path / "library"
    long = formats.make_all(tmp_path / "made")["long_mkv"].path
    lib.mkdir()
    shutil.copy(long, lib / long.name)
    index_dir = tmp_path / "index"
    args = (str(lib), "--config", str(TINY), f"index.path={index_dir}", "index.window_seconds=60")
    first = run(capsys, *args)
    assert (first["ingested"], first["failed"], first["count"]) == (1, 0, 1)
    assert run(capsys, *args)["skipped"] == 1
    cfg = load_config(TINY, ["index.window_seconds=60"])
    model = load_encoder_model(cfg, seed=0)
    sha = content_hash(long)
    expected = [
        to_indexed(e, sha, model.model_version, long.name)
        for e in encode_decoded(model, decode_windows_for_model(long, cfg))
    ]
    with open_index(
        cfg.index.model_copy(update={"path": index_dir}), model.embed_dim, model.model_version
    ) as index:
        stored = index.windows(video_id(sha, model.model_version))
    assert [(w.payload["window_start"], w.payload["window_end"]) for w in stored] == [
        (0.0, 60.0),
        (60.0, 120.0),
        (120.0, 150.0),
    ]
    for got, want in zip(stored, expected, strict=True):
        assert got.id == want.id
        np.testing.assert_allclose(got.frames, want.frames, atol=1e-5)
        assert got.payload["frame_timestamps"] == pytest.approx(want.payload["frame_timestamps"])


@pytest.mark.slow
def test_bulk_ingest_from_annotations(ray_local, synth_corpus, tmp_path, capsys):
    root = corpus_dir(synth_corpus)
    rows = [
        json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines() if line.strip()
    ]
    index_dir = tmp_path / "index"
    overrides = (f"index.path={index_dir}", f"data.video_root={root}")
    result = run(
        capsys, str(root / "annotations.jsonl"), "--config", str(TINY), *overrides, "--batch-size", "4"
    )
    assert result["files"] == len(rows) and result["ingested"] == len(rows) and result["failed"] == 0
    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=0)
    with open_index(
        cfg.index.model_copy(update={"path": index_dir}), model.embed_dim, model.model_version
    ) as index:
        assert index.count() == len(rows)
        first = index.get(video_id(content_hash(root / rows[0]["video"]), model.model_version))
    assert (
        first.payload["title"] == rows[0]["title"] and first.payload["metadata"]["split"] == rows[0]["split"]
    )


@pytest.mark.slow
def test_outside_roots_and_locked_index_fail_clearly(ray_local, library, tmp_path, capsys):
    from ray_jobs.ingest import main

    only_sub = run(
        capsys,
        str(library),
        "--config",
        str(TINY),
        f"index.path={tmp_path / 'a'}",
        "--root",
        str(library / "sub"),
    )
    assert only_sub["rejected"] == 5 and only_sub["ingested"] == GOOD
    cfg = load_config(TINY)
    model = load_encoder_model(cfg, seed=0)
    with open_index(
        cfg.index.model_copy(update={"path": tmp_path / "a"}), model.embed_dim, model.model_version
    ):
        # a running Serve app would hold the shard like this: the job refuses with a clear message
        assert main([str(library), "--config", str(TINY), f"index.path={tmp_path / 'a'}"]) == 2
    assert "owned by one process" in capsys.readouterr().err


def test_stages_run_without_ray(library):
    """The Ray Data stages are plain callables on dicts of numpy arrays; broken files keep their
    row with an error and no vectors."""
    from adaclip.video.settings import DecodeSettings
    from ray_jobs.frame_store import decode_rows
    from ray_jobs.ingest import Source, hash_sources, list_sources, to_items
    from ray_jobs.ingest_stages import EncodeVideos

    cfg = load_config(TINY)
    sources, roots = list_sources(library, cfg)
    assert roots == [library.resolve()] and len(sources) == GOOD + 5
    paths = [str(library / "sub" / s.path.name) for s in sources if s.source.startswith("sub/")][:2]
    batch = {"path": np.array(paths + [str(library / "notes.mp4")], dtype=object)}
    hashes = hash_sources(
        [Source(Path(p), p, p) for p in batch["path"]] + [Source(library / "gone.mp4", "", "")]
    )
    assert hashes[0] == content_hash(paths[0]) and hashes[-1] == ""
    batch["sha256"] = np.array(hashes[:3], dtype=object)
    for key in ("source", "title", "metadata", "captions"):
        batch[key] = np.array(["x"] * 3 if key not in ("metadata", "captions") else ["{}"] * 3, dtype=object)
    batch["video_index"] = np.arange(3)
    settings = DecodeSettings.from_config(cfg, train=False).model_dump()
    decoded = {**batch, **decode_rows(batch, settings)}
    n, s = cfg.model.num_frames, cfg.data.clip_size
    assert decoded["clip_frames"].shape == (3, n, s, s, 3)
    assert list(decoded["error"][:2]) == ["", ""] and decoded["error"][2]
    encoded = EncodeVideos(cfg.model_dump(mode="json"), checkpoint=None, seed=0)(decoded)
    assert encoded["video"].shape == (3, 64) and encoded["frames"].shape == (3, cfg.model.top_k, 64)
    assert not encoded["video"][2].any() and np.allclose(np.linalg.norm(encoded["video"][:2], axis=1), 1)
    model = load_encoder_model(cfg, seed=0)
    (expected,) = encode_decoded(model, [decode_for_model(paths[1], cfg)])
    np.testing.assert_allclose(encoded["video"][1], expected.video, atol=1e-5)
    items = to_items(encoded, model.model_version)
    assert [item.id for item in items] == [video_id(h, model.model_version) for h in hashes[:2]]
