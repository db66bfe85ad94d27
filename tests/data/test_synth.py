"""The synthetic corpus: determinism, splits, distinct captions, readable by the jsonl reader, CLI."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import DataConfig
from adaclip.data import read_annotations
from adaclip.data.synth import main, make_corpus, plan_scenes, split_counts
from adaclip.data.synth_render import all_combinations
from adaclip.video import decode_video

VIDEOS = 20


@pytest.fixture(scope="module")
def twin_corpora(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two corpora with seed 11 and one with seed 12."""
    dirs = [tmp_path_factory.mktemp(name) for name in ("a", "b", "c")]
    for out, seed in zip(dirs, (11, 11, 12), strict=True):
        assert make_corpus(out, VIDEOS, seed, frames_per_video=24, size=48, fps=6) == out
    return tuple(dirs)


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]


def test_same_seed_same_corpus(twin_corpora):
    a, b, _ = twin_corpora
    assert (a / "annotations.jsonl").read_bytes() == (b / "annotations.jsonl").read_bytes()
    assert (a / "corpus.json").read_bytes() == (b / "corpus.json").read_bytes()
    for line in _lines(a)[:6]:
        left = decode_video(a / line["video"], 24, "uniform", clip_size=48, selector_size=24)
        right = decode_video(b / line["video"], 24, "uniform", clip_size=48, selector_size=24)
        assert np.array_equal(left.clip_frames, right.clip_frames)
        assert (a / line["video"]).read_bytes() == (
            b / line["video"]
        ).read_bytes()  # encoder is deterministic


def test_other_seed_other_corpus(twin_corpora):
    a, _, c = twin_corpora
    assert [x["captions"] for x in _lines(a)] != [x["captions"] for x in _lines(c)]
    first_a = decode_video(a / "videos/synth_00000.mp4", 4, clip_size=48).clip_frames
    first_c = decode_video(c / "videos/synth_00000.mp4", 4, clip_size=48).clip_frames
    assert not np.array_equal(first_a, first_c)


def test_splits_and_jsonl_reader(twin_corpora):
    a, _, _ = twin_corpora
    cfg = DataConfig(dataset="jsonl", annotations=a / "annotations.jsonl", video_root=a)
    by_split = {split: read_annotations(cfg, split) for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in by_split.items()} == {"train": 14, "val": 3, "test": 3}
    ids = [r.video_id for records in by_split.values() for r in records]
    assert len(ids) == len(set(ids)) == VIDEOS
    for records in by_split.values():
        for record in records:
            assert record.path.is_file() and record.path.stat().st_size > 0
            assert len(record.captions) == 3 and record.title == record.captions[0]


def test_manifest_describes_each_video(twin_corpora):
    a, _, _ = twin_corpora
    manifest = json.loads((a / "corpus.json").read_text())
    assert {k: manifest[k] for k in ("seed", "videos", "frames_per_video", "size", "fps")} == {
        "seed": 11,
        "videos": VIDEOS,
        "frames_per_video": 24,
        "size": 48,
        "fps": 6,
    }
    assert manifest["splits"] == {"train": 14, "val": 3, "test": 3}
    lines = {x["id"]: x for x in _lines(a)}
    for item in manifest["items"]:
        start, stop = item["informative"]
        assert start >= 0 and stop <= 24 and 3 <= stop - start <= 6
        caption = lines[item["id"]]["captions"][0]
        assert (
            caption == f"a {item['object_size']} {item['colour']} {item['shape']} in the {item['position']}"
        )
        assert lines[item["id"]]["split"] == item["split"]


def test_captions_are_distinct():
    assert len(set(all_combinations())) == len(all_combinations()) >= 300
    scenes, splits = plan_scenes(480, seed=0, frames=48)
    captions = {(s.colour, s.shape, s.position, s.size) for s in scenes}
    assert len(captions) == 480  # every combination once: retrieval among 480 videos is well posed
    assert splits.count("train") == 336 and splits.count("val") == splits.count("test") == 72
    starts = np.array([s.start for s in scenes])
    assert starts.min() < 5 and starts.max() > 38  # the informative span moves around the video


def test_split_counts():
    assert split_counts(1) == {"train": 1, "val": 0, "test": 0}
    assert split_counts(3) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(200) == {"train": 140, "val": 30, "test": 30}


def test_cli_summary(tmp_path, capsys):
    assert (
        main(["--out", str(tmp_path / "j"), "--videos", "3", "--seed", "1", "--frames", "16", "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 3 and summary["splits"] == {"train": 1, "val": 1, "test": 1}
    assert Path(summary["annotations"]).is_file() and Path(summary["manifest"]).is_file()
    assert main(["--out", str(tmp_path / "h"), "--videos", "2", "--frames", "16", "--size", "32"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 2 videos (2 train / 0 val / 0 test)") and "\n" not in line
    assert main(["--out", str(tmp_path / "x"), "--videos", "2", "--size", "33"]) == 2
    assert "even" in capsys.readouterr().err


@pytest.mark.slow
def test_two_hundred_videos_under_a_minute(tmp_path):
    started = time.perf_counter()
    make_corpus(tmp_path, 200, seed=0)
    assert time.perf_counter() - started < 60
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 200
