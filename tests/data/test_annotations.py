"""Annotation readers: jsonl, AdaCLIP's JSON for MSR-VTT / DiDeMo / ActivityNet, caption modes."""

import json
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import DataConfig
from adaclip.data import caption_table, captions_for_training, read_annotations
from adaclip.data.adaclip_json import split_file_candidates
from adaclip.errors import DataError

# ---------------------------------------------------------------- jsonl


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def jsonl_cfg(tmp_path) -> DataConfig:
    rows = [
        {"video": "videos/a.mp4", "captions": ["a cat", "a small cat"], "split": "train", "title": "Cat"},
        {"id": "dog", "video": "/abs/videos/d.webm", "captions": ["a dog"], "split": "train"},
        "",
        {"video": "b.mp4", "captions": ["  a bird "], "split": "val", "timestamps": [[0, 1.5]]},
        {"video": "c.mp4", "captions": ["a cow", "two cows"], "split": "test"},
    ]
    ann = _jsonl(tmp_path / "ann.jsonl", rows)
    return DataConfig(dataset="jsonl", annotations=ann, video_root=tmp_path / "root")


def test_jsonl_reads_each_split(jsonl_cfg, tmp_path):
    train = read_annotations(jsonl_cfg, "train")
    assert [r.video_id for r in train] == ["a", "dog"]
    assert train[0].path == tmp_path / "root" / "videos" / "a.mp4"  # relative to video_root
    assert train[1].path == Path("/abs/videos/d.webm")  # absolute kept
    assert train[0].captions == ["a cat", "a small cat"] and train[0].title == "Cat"
    assert all(r.split == "train" for r in train)
    (val,) = read_annotations(jsonl_cfg, "val")
    assert val.video_id == "b" and val.captions == ["a bird"] and val.timestamps == [(0.0, 1.5)]
    (test,) = read_annotations(jsonl_cfg, "test")
    assert test.timestamps is None and test.title is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"captions": ["x"], "split": "train"}', "missing key 'video'"),
        ('{"video": "x.mp4", "split": "train"}', "missing key 'captions'"),
        ('{"video": "x.mp4", "captions": "one string", "split": "train"}', "non-empty list"),
        ('{"video": "x.mp4", "captions": [], "split": "train"}', "non-empty list"),
        ('{"video": "x.mp4", "captions": ["ok", ""], "split": "train"}', "non-empty string"),
        ('{"video": 3, "captions": ["ok"], "split": "train"}', "'video' must be"),
        ('{"video": "x.mp4", "captions": ["ok"], "split": "train", "timestamps": [[1]]}', "timestamps"),
        ('{"video": "good.mp4", "captions": ["dup"], "split": "train"}', "duplicate video id 'good'"),
    ],
)
def test_jsonl_malformed_names_file_and_line(tmp_path, line, message):
    good = {"video": "good.mp4", "captions": ["fine"], "split": "train"}
    ann = _jsonl(tmp_path / "bad.jsonl", [good, line])
    cfg = DataConfig(dataset="jsonl", annotations=ann, video_root=tmp_path)
    with pytest.raises(DataError, match=message) as info:
        read_annotations(cfg, "train")
    assert f"{ann}:2" in str(info.value)


def test_jsonl_missing_file_and_empty_split(tmp_path, jsonl_cfg):
    with pytest.raises(DataError, match="does not exist"):
        read_annotations(DataConfig(dataset="jsonl", annotations=tmp_path / "nope.jsonl"), "train")
    with pytest.raises(DataError, match=r"no videos in split 'valid'.*'test', 'train', 'val'"):
        read_annotations(jsonl_cfg, "valid")


# ---------------------------------------------------------------- AdaCLIP JSON


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def videos(tmp_path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    for name in ["video0.mp4", "video1.webm", "video2.mkv", "video2.avi", "v_abc.mp4", "12@N0_77.mov"]:
        (root / name).write_bytes(b"x")
    return root


def test_msrvtt_jsfusion_layout(tmp_path, videos):
    annots = tmp_path / "annots" / "msrvtt-jsfusion"
    _write(
        annots / "train.json",
        {
            "video0": {
                "extension": ".mp4",
                "timestamps": [[0.0, 10.0]],
                "sentences": ["a man talks", "a person"],
            },
            "video1": {"extension": "webm", "sentences": ["cars race"]},
            "video2": {"sentences": ["a song"]},  # no extension: .mkv comes before .avi
            "video9": {"sentences": ["missing file"]},
        },
    )
    _write(annots / "val.json", {"video3": {"sentences": ["the 1k-A test caption"]}})
    cfg = DataConfig(dataset="msrvtt", annotations=annots, video_root=videos)
    train = read_annotations(cfg, "train")
    assert [r.video_id for r in train] == ["video0", "video1", "video2", "video9"]
    assert [r.path.name for r in train] == ["video0.mp4", "video1.webm", "video2.mkv", "video9.mp4"]
    assert not train[3].path.exists()  # decoding will report it; reading does not fail
    assert train[0].timestamps == [(0.0, 10.0)] and train[0].captions == ["a man talks", "a person"]
    assert all(r.split == "train" for r in train)
    (test,) = read_annotations(cfg, "test")  # 1k-A: AdaCLIP ships it as val.json
    assert test.video_id == "video3" and test.split == "test"
    assert split_file_candidates("msrvtt", "test") == ["test.json", "val.json"]


def test_didemo_and_activitynet_layouts(tmp_path, videos):
    didemo = tmp_path / "didemo"
    _write(
        didemo / "train.json", {"12@N0_77.mov": {"extension": "", "sentences": ["a dog runs.", "it stops."]}}
    )
    cfg = DataConfig(dataset="didemo", annotations=didemo, video_root=videos)
    (record,) = read_annotations(cfg, "train")
    assert record.path == videos / "12@N0_77.mov"  # the id is the file name itself
    with pytest.raises(DataError, match=r"looked for \['test.json'\]"):
        read_annotations(cfg, "test")

    anet = tmp_path / "activitynet"
    entry = {"sentences": ["one", "two"], "timestamps": [[0, 5.5], [5.5, 20]], "duration": 20.0}
    _write(anet / "val_1.json", {"v_abc": entry})
    cfg = DataConfig(dataset="activitynet", annotations=anet, video_root=videos)
    for split in ("val", "test"):
        (record,) = read_annotations(cfg, split)
        assert record.timestamps == [(0.0, 5.5), (5.5, 20.0)] and record.path.name == "v_abc.mp4"


def test_single_file_forms(tmp_path, videos):
    combined = _write(
        tmp_path / "all.json", {"train": {"video0": ["a"]}, "test": {"video1": {"sentences": ["b"]}}}
    )
    cfg = DataConfig(dataset="msrvtt", annotations=combined, video_root=videos)
    assert [r.video_id for r in read_annotations(cfg, "train")] == ["video0"]
    assert [r.video_id for r in read_annotations(cfg, "test")] == ["video1"]

    one_split = _write(tmp_path / "val.json", {"video0": {"sentences": ["a"]}})
    cfg = DataConfig(dataset="msrvtt", annotations=one_split, video_root=videos)
    assert [r.video_id for r in read_annotations(cfg, "test")] == ["video0"]  # val.json is MSR-VTT's test
    with pytest.raises(DataError, match="holds split 'val' but split 'train' was asked for"):
        read_annotations(cfg, "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"video0": {"sentences": ["a"]},\n "video1": ', "all.json:2: not valid JSON"),
        ('["video0"]', "expected a JSON object"),
        ('{"video0": {"caption": "a"}}', "video 'video0': missing key 'sentences'"),
        ('{"video0": {"sentences": "a"}}', "video 'video0': captions must be a non-empty list"),
        ('{"video0": {"sentences": ["a"], "timestamps": [["x", 1]]}}', "video 'video0': timestamps"),
        ('{"video0": 7}', "video 'video0': expected an object"),
        ("{}", "no videos in split"),
    ],
)
def test_adaclip_json_malformed_names_file_and_key(tmp_path, videos, content, message):
    path = tmp_path / "all.json"
    path.write_text(content)
    cfg = DataConfig(dataset="didemo", annotations=path, video_root=videos)
    with pytest.raises(DataError, match=message) as info:
        read_annotations(cfg, "train")
    assert str(path) in str(info.value)


def test_adaclip_json_missing_paths(tmp_path, videos):
    with pytest.raises(DataError, match="do not exist"):
        read_annotations(
            DataConfig(dataset="didemo", annotations=tmp_path / "none", video_root=videos), "train"
        )
    annots = _write(tmp_path / "a" / "train.json", {"video0": ["a"]}).parent
    with pytest.raises(DataError, match="video_root .* is not a directory"):
        read_annotations(
            DataConfig(dataset="didemo", annotations=annots, video_root=tmp_path / "no"), "train"
        )


# ---------------------------------------------------------------- caption modes


def test_caption_modes():
    captions = ["a man sings.", "someone performs.", "a concert."]
    rng = np.random.default_rng(0)
    assert captions_for_training(captions, "concat", rng) == ["a man sings. someone performs. a concert."]
    assert captions_for_training(captions, "all", rng) == captions
    drawn = [captions_for_training(captions, "random", rng) for _ in range(200)]
    assert all(len(d) == 1 and d[0] in captions for d in drawn)
    assert {d[0] for d in drawn} == set(captions)
    a = [captions_for_training(captions, "random", np.random.default_rng(3)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    with pytest.raises(DataError):
        captions_for_training([], "concat", rng)
    with pytest.raises(ValueError, match="unknown caption mode"):
        captions_for_training(captions, "first", rng)  # type: ignore[arg-type]


def test_caption_table(jsonl_cfg):
    records = read_annotations(jsonl_cfg, "train") + read_annotations(jsonl_cfg, "test")
    for mode in ("random", "all"):
        texts, caption_to_video = caption_table(records, mode)
        assert texts == ["a cat", "a small cat", "a dog", "a cow", "two cows"]
        assert caption_to_video == [0, 0, 1, 2, 2]
    assert caption_table(records, "concat") == (["a cat a small cat", "a dog", "a cow two cows"], [0, 1, 2])
    assert caption_table([], "concat") == ([], [])


@pytest.mark.parametrize("dataset", ["jsonl", "msrvtt", "didemo", "activitynet"])
def test_paragraph_queries_in_every_annotation_format(tmp_path, videos, dataset):
    """concat evaluation: one query per video, its sentences joined in order, whatever the format."""
    sentences = {"video0": ["a man walks in.", "he sits down."], "v_abc": ["one", "two", "three"]}
    if dataset == "jsonl":
        rows = [{"video": f"{v}.mp4", "captions": s, "split": "test"} for v, s in sentences.items()]
        annotations = _jsonl(tmp_path / "a.jsonl", rows)
    else:
        annotations = tmp_path / dataset
        name = "val_1.json" if dataset == "activitynet" else "test.json"
        _write(annotations / name, {v: {"sentences": s, "extension": ".mp4"} for v, s in sentences.items()})
    cfg = DataConfig(dataset=dataset, annotations=annotations, video_root=videos)
    texts, caption_to_video = caption_table(read_annotations(cfg, "test"), "concat")
    assert texts == ["a man walks in. he sits down.", "one two three"]
    assert caption_to_video == [0, 1]
