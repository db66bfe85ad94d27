"""The per-batch stages of the Ray Data pipeline, called directly (no Ray): decoded video rows,
the epoch's training rows (frames drawn from a pool, captions, tokens), evaluation rows, decode
settings and the error ratio."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from adaclip.config import Config, load_config
from adaclip.data.annotations import read_annotations
from adaclip.errors import DataError
from adaclip.models.clip import load_tokenizer
from adaclip.video.decode import decode_video
from adaclip.video.settings import DecodeSettings, draw_frames
from ray_jobs.data import check_error_ratio
from ray_jobs.frame_store import decode_rows, eval_rows, training_rows

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
N, S, SEL, TOKENS = 16, 32, 32, 32  # configs/tiny.yaml: num_frames, clip_size, selector input_size, tokens


def tiny_config(corpus: Path, *extra: str) -> Config:
    overrides = [f"data.annotations={corpus / 'annotations.jsonl'}", f"data.video_root={corpus}"]
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
    cfg = tiny_config(synth_corpus)
    return [(r.path, r.captions) for r in read_annotations(cfg.data, "train")[:3]]


def decoded_rows(cfg: Config, paths, captions, train: bool = False, pool: int = 1) -> dict[str, np.ndarray]:
    settings = DecodeSettings.from_config(cfg, train).stored(pool)
    return decode_rows(batch_of(paths, captions), settings.model_dump(), seed=0)


def rows_for_training(cfg: Config, batch: dict[str, np.ndarray], keep_failed: bool = False):
    return training_rows(
        batch, N, cfg.data.caption_mode, cfg.model.clip.model_dump_json(), TOKENS, keep_failed=keep_failed
    )


def test_decoded_rows_equal_decoding_each_file(synth_corpus, videos):
    cfg = tiny_config(synth_corpus)
    out = decoded_rows(cfg, [p for p, _ in videos], [c for _, c in videos])
    assert out["clip_frames"].shape == (3, N, S, S, 3) and out["clip_frames"].dtype == np.uint8
    assert out["selector_frames"].shape == (3, N, SEL, SEL, 1)  # the raw selector reads grey
    assert list(out["error"]) == ["", "", ""] and out["video_index"].tolist() == [0, 1, 2]
    reference = decode_video(
        videos[1][0], N, "segment", clip_size=S, selector_size=SEL, selector_grayscale=True
    )
    np.testing.assert_array_equal(out["clip_frames"][1], reference.clip_frames)
    np.testing.assert_array_equal(out["selector_frames"][1], reference.selector_frames)
    np.testing.assert_array_equal(out["timestamps"][1], reference.timestamps)


def test_bad_files_keep_their_row_with_the_reason_and_zero_frames(synth_corpus, videos, tmp_path):
    garbage, empty, cut = tmp_path / "garbage.mp4", tmp_path / "empty.mp4", tmp_path / "cut.mp4"
    garbage.write_bytes(os.urandom(4096))
    empty.write_bytes(b"")
    cut.write_bytes(videos[1][0].read_bytes()[:300])
    cfg = tiny_config(synth_corpus)
    paths = [videos[0][0], garbage, empty, cut, videos[1][0]]
    out = decoded_rows(cfg, paths, [["a"]] * 5)
    assert [bool(e) for e in out["error"]] == [False, True, True, True, False]
    assert all(isinstance(e, str) for e in out["error"])
    assert not out["clip_frames"][1:4].any() and out["clip_frames"][[0, 4]].std() > 0
    evaluation = eval_rows(out)
    assert evaluation["video_index"].tolist() == [0, 4]
    assert set(evaluation) == {"video_index", "clip_frames", "selector_frames", "timestamps"}


@pytest.mark.parametrize(("mode", "per_video"), [("all", 3), ("random", 1), ("concat", 1)])
def test_training_rows_follow_the_caption_mode(synth_corpus, videos, mode, per_video):
    cfg = tiny_config(synth_corpus, f"data.caption_mode={mode}")
    decoded = decoded_rows(cfg, [p for p, _ in videos], [c for _, c in videos], train=True)
    out = rows_for_training(cfg, decoded)
    rows = per_video * len(videos)
    assert out["tokens"].shape == (rows, TOKENS) and out["tokens"].dtype == np.int64
    assert out["clip_frames"].shape == (rows, N, S, S, 3) and not out["failed"].any()
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
        for frames in out["clip_frames"][out["video_index"] == v]:
            np.testing.assert_array_equal(frames, decoded["clip_frames"][v])


def test_failed_rows_are_dropped_or_marked_for_the_trainer(synth_corpus, videos, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 100)
    cfg = tiny_config(synth_corpus, "data.caption_mode=all")
    decoded = decoded_rows(cfg, [garbage, videos[0][0]], [["x"], videos[0][1]], train=True)
    dropped = rows_for_training(cfg, decoded)
    assert dropped["video_index"].tolist() == [1] * 3 and not dropped["failed"].any()
    marked = rows_for_training(cfg, decoded, keep_failed=True)
    assert marked["video_index"].tolist() == [0, 1, 1, 1] and marked["failed"].tolist() == [1, 0, 0, 0]
    none = rows_for_training(cfg, decoded_rows(cfg, [garbage], [["x"]], train=True))
    assert none["tokens"].shape == (0, TOKENS) and none["clip_frames"].shape == (0, N, S, S, 3)


def test_random_sampling_draws_new_sorted_frames_from_the_stored_pool(synth_corpus, videos):
    cfg = tiny_config(synth_corpus, "data.train_sampling=random")
    settings = DecodeSettings.from_config(cfg, train=True)
    assert settings.sampling == "random" and settings.stored(4).num_frames == 4 * N
    assert settings.stored(4).sampling == "segment"
    # a pool of 2N distinct frames (the synthetic videos have 48)
    decoded = decoded_rows(cfg, [videos[0][0]], [videos[0][1]], train=True, pool=2)
    assert decoded["clip_frames"].shape[1] == 2 * N and np.all(np.diff(decoded["timestamps"][0]) > 0)
    draws = [rows_for_training(cfg, decoded) for _ in range(4)]
    stamps = [d["timestamps"][0] for d in draws]
    assert all(s.shape == (N,) and np.all(np.diff(s) > 0) for s in stamps)  # N distinct, in order
    assert all(np.isin(s, decoded["timestamps"][0]).all() for s in stamps)
    assert len({s.tobytes() for s in stamps}) > 1  # a new draw every epoch
    for d in draws:  # the frames are the pool's frames at the drawn times
        pos = np.searchsorted(decoded["timestamps"][0], d["timestamps"][0])
        np.testing.assert_array_equal(d["clip_frames"][0], decoded["clip_frames"][0][pos])
    rng = np.random.default_rng(0)
    picks = draw_frames(64, 16, rng)
    assert len(set(picks.tolist())) == 16 and np.all(np.diff(picks) > 0)


def test_decode_settings_key_changes_with_every_pixel_setting(synth_corpus):
    cfg = tiny_config(synth_corpus, "data.eval_sampling=random")
    evaluation = DecodeSettings.from_config(cfg, train=False)
    assert evaluation.sampling == "segment"  # indexing and evaluation are never random
    keys = {evaluation.key()}
    for change in ({"num_frames": 8}, {"sampling": "uniform"}, {"clip_size": 64}, {"selector_size": 16}):
        keys.add(evaluation.model_copy(update=change).key())
    keys.add(evaluation.model_copy(update={"grayscale": not evaluation.grayscale}).key())
    assert len(keys) == 6
    assert DecodeSettings.from_config(cfg, train=False).key() == evaluation.key()  # stable


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
