"""The decode stage of the Ray Data pipeline, called directly (no Ray): rows, shapes and dtypes for
training and evaluation, corrupt videos dropped and recorded, the decoded-frame cache, the error ratio."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import Config, load_config
from adaclip.data.annotations import read_annotations
from adaclip.errors import DataError
from adaclip.models.clip import load_tokenizer
from adaclip.video.cache import FrameCache
from adaclip.video.decode import DecodedVideo, decode_video
from ray_jobs.data import DecodeClips, check_error_ratio, decode_settings

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
N, S, SEL, TOKENS = 16, 32, 32, 32  # configs/tiny.yaml: num_frames, clip_size, selector input_size, tokens
TRAIN_COLUMNS = {"video_index", "clip_frames", "selector_frames", "timestamps", "tokens"}


def tiny_config(corpus: Path, cache: Path | None, *extra: str) -> Config:
    overrides = [f"data.annotations={corpus / 'annotations.jsonl'}", f"data.video_root={corpus}"]
    overrides.append(f"data.cache_dir={cache}" if cache else "data.cache_dir=null")
    return load_config(TINY, [*overrides, *extra])


def batch_of(paths: list[Path], captions: list[list[str]]) -> dict[str, np.ndarray]:
    """A batch as Ray Data hands it to map_batches: numpy columns, strings as object arrays."""
    return {
        "video_index": np.arange(len(paths), dtype=np.int64),
        "path": np.array([str(p) for p in paths], dtype=object),
        "captions": np.array([json.dumps(c) for c in captions], dtype=object),
    }


@pytest.fixture(scope="module")
def videos(synth_corpus) -> list[tuple[Path, list[str]]]:
    """(path, captions) of the first three training videos of the session corpus."""
    cfg = tiny_config(synth_corpus, None)
    return [(r.path, r.captions) for r in read_annotations(cfg.data, "train")[:3]]


def decode_clips(cfg: Config, train: bool) -> DecodeClips:
    return DecodeClips(cfg.model_dump(mode="json"), train=train, seed=0)


def assert_frame_columns(out: dict[str, np.ndarray], rows: int) -> None:
    assert out["clip_frames"].shape == (rows, N, S, S, 3) and out["clip_frames"].dtype == np.uint8
    assert out["selector_frames"].shape == (rows, N, SEL, SEL, 1)  # the raw selector reads grey
    assert out["selector_frames"].dtype == np.uint8
    assert out["timestamps"].shape == (rows, N) and out["timestamps"].dtype == np.float32
    assert out["video_index"].shape == (rows,) and out["video_index"].dtype == np.int64
    if rows:
        assert np.all(np.diff(out["timestamps"], axis=1) > 0)  # N distinct frames in temporal order
        assert out["clip_frames"].std() > 0  # real pixels, not an empty buffer


@pytest.mark.parametrize(("mode", "per_video"), [("all", 3), ("random", 1), ("concat", 1)])
def test_train_batch_has_one_row_per_training_caption(synth_corpus, videos, mode, per_video):
    cfg = tiny_config(synth_corpus, None, f"data.caption_mode={mode}")
    out = decode_clips(cfg, train=True)(batch_of([p for p, _ in videos], [c for _, c in videos]))
    assert set(out) == TRAIN_COLUMNS
    rows = per_video * len(videos)
    assert_frame_columns(out, rows)
    assert out["tokens"].shape == (rows, TOKENS) and out["tokens"].dtype == np.int64
    assert out["video_index"].tolist() == [i for i in range(len(videos)) for _ in range(per_video)]
    tokenize = load_tokenizer(cfg.model.clip, TOKENS)
    for v, (_, captions) in enumerate(videos):
        got = out["tokens"][out["video_index"] == v]
        if mode == "all":
            expected = tokenize(captions).numpy()
        elif mode == "concat":
            expected = tokenize([" ".join(captions)]).numpy()
        else:  # one of the video's own captions
            options = tokenize(captions).numpy()
            expected = options[[i for i in range(len(captions)) if np.array_equal(options[i], got[0])]]
        np.testing.assert_array_equal(got, expected)
        # every caption row of a video carries the same frames
        frames = out["clip_frames"][out["video_index"] == v]
        assert all(np.array_equal(f, frames[0]) for f in frames)


def test_eval_batch_has_one_row_per_video_and_no_tokens(synth_corpus, videos):
    cfg = tiny_config(synth_corpus, None)
    paths = [p for p, _ in videos]
    out = decode_clips(cfg, train=False)(batch_of(paths, [c for _, c in videos]))
    assert set(out) == TRAIN_COLUMNS - {"tokens"}
    assert_frame_columns(out, len(videos))
    assert out["video_index"].tolist() == list(range(len(videos)))
    reference = decode_video(paths[1], N, "segment", clip_size=S, selector_size=SEL, selector_grayscale=True)
    np.testing.assert_array_equal(out["clip_frames"][1], reference.clip_frames)
    np.testing.assert_array_equal(out["selector_frames"][1], reference.selector_frames)


@pytest.mark.parametrize("train", [True, False])
def test_corrupt_videos_are_dropped_and_recorded(synth_corpus, videos, tmp_path, train):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(videos[1][0].read_bytes()[:300])
    (good0, caps0), (good1, caps1) = videos[0], videos[1]
    cfg = tiny_config(synth_corpus, None, "data.caption_mode=all")
    clips = decode_clips(cfg, train=train)
    out = clips(batch_of([good0, garbage, cut, good1], [caps0, ["x"], ["y"], caps1]))
    per_video = 3 if train else 1
    assert_frame_columns(out, 2 * per_video)
    assert sorted(set(out["video_index"].tolist())) == [0, 3]  # the two good videos keep their index
    assert set(clips.failures) == {str(garbage), str(cut)}
    assert all(isinstance(reason, str) and reason for reason in clips.failures.values())


def test_a_batch_where_every_video_fails_keeps_the_schema(synth_corpus, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 100)
    clips = decode_clips(tiny_config(synth_corpus, None), train=True)
    out = clips(batch_of([garbage], [["a caption"]]))
    assert set(out) == TRAIN_COLUMNS
    assert_frame_columns(out, 0)
    assert out["tokens"].shape == (0, TOKENS)
    assert list(clips.failures) == [str(garbage)]


def decoded(path: Path) -> DecodedVideo:
    return decode_video(path, N, "segment", clip_size=S, selector_size=SEL, selector_grayscale=True)


def assert_same_video(a: DecodedVideo, b: DecodedVideo) -> None:
    for f in fields(DecodedVideo):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, f.name


def test_frame_cache_hit_is_identical_and_a_changed_file_misses(videos, tmp_path):
    video = tmp_path / "v.mp4"
    shutil.copy(videos[0][0], video)
    settings = {"num_frames": N, "sampling": "segment"}
    cache = FrameCache(tmp_path / "cache", settings)
    assert cache.get(video) is None and len(cache) == 0
    original = decoded(video)
    cache.put(video, original)
    assert len(cache) == 1
    assert_same_video(cache.get(video), original)
    assert_same_video(FrameCache(tmp_path / "cache", settings).get(video), original)  # a later run
    assert FrameCache(tmp_path / "cache", {**settings, "num_frames": 8}).get(video) is None

    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, new mtime
    assert cache.get(video) is None
    cache.put(video, original)
    assert cache.get(video) is not None
    with video.open("ab") as f:  # new size (and mtime)
        f.write(b"\x00")
    assert cache.get(video) is None
    assert cache.get(tmp_path / "missing.mp4") is None


def test_decode_clips_reads_through_the_cache(synth_corpus, videos, tmp_path):
    cfg = tiny_config(synth_corpus, tmp_path / "cache")
    paths, captions = [p for p, _ in videos], [c for _, c in videos]
    first = decode_clips(cfg, train=False)(batch_of(paths, captions))
    cache = FrameCache(tmp_path / "cache", decode_settings(cfg, cfg.data.eval_sampling))
    assert len(cache) == len(paths)
    # Plant a recognisable entry: a cache hit must return it instead of decoding the file again.
    planted = decoded(paths[0])
    planted = DecodedVideo(**{**planted.__dict__, "clip_frames": np.full_like(planted.clip_frames, 7)})
    cache.put(paths[0], planted)
    second = decode_clips(cfg, train=False)(batch_of(paths, captions))
    assert np.all(second["clip_frames"][0] == 7)
    for key in first:
        np.testing.assert_array_equal(second[key][1:], first[key][1:])


def test_random_sampling_is_never_cached(synth_corpus, videos, tmp_path):
    cfg = tiny_config(synth_corpus, tmp_path / "cache", "data.train_sampling=random")
    clips = decode_clips(cfg, train=True)
    assert clips.cache is None
    clips(batch_of([videos[0][0]], [videos[0][1]]))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))


def summary(seen: int, failed: int) -> dict:
    failures = {f"/videos/bad_{i}.mp4": "not a video" for i in range(failed)}
    return {"seen": seen, "failed": failed, "failures": failures}


@pytest.mark.parametrize(
    ("seen", "failed", "ratio"), [(20, 1, 0.05), (20, 0, 0.0), (0, 0, 0.0), (10, 10, 1.0), (4, 1, 0.3)]
)
def test_error_ratio_at_or_below_the_limit_passes(seen, failed, ratio):
    check_error_ratio(summary(seen, failed), ratio)


@pytest.mark.parametrize(("seen", "failed", "ratio"), [(20, 2, 0.05), (20, 1, 0.0), (4, 2, 0.3)])
def test_error_ratio_past_the_limit_raises_a_clear_data_error(seen, failed, ratio):
    with pytest.raises(DataError) as e:
        check_error_ratio(summary(seen, failed), ratio)
    message = str(e.value)
    assert f"{failed} of {seen} videos failed" in message
    assert "data.max_error_ratio" in message and "/videos/bad_0.mp4: not a video" in message
