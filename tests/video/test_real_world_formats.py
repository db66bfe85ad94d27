"""Files as people upload them (H.264 + AAC at 720p and 1080p, odd sizes, MPEG-4 in Matroska, VP8 and
VP9 in WebM, one frame, minutes long, audio only): probed, decoded for the model and thumbnailed.

Expected values come from what ``formats`` wrote (frame count, rate, size, each frame's grey
level), never from reading the files back with the code under test.
"""

from __future__ import annotations

import io
from pathlib import Path

import formats  # tests/video/formats.py: pytest puts this folder on sys.path (no __init__.py here)
import numpy as np
import pytest
from formats import MediaFile, level
from PIL import Image

from adaclip.config import Config, load_config
from adaclip.encoding import decode_for_model
from adaclip.errors import VideoDecodeError
from adaclip.video import decode_video, probe_video, sample_indices
from serve.media import THUMBNAIL_SIZE, thumbnail_png

VIDEOS = [
    "h264_720p",
    "h264_1080p",
    "odd_mpeg4",
    "odd_h264_444",
    "mpeg4_mkv",
    "vp9_webm",
    "vp8_webm",
    "one_frame",
    "long_mp4",
    "long_mkv",
    "mkv_audio_longer",
]
LONG = ["long_mp4", "long_mkv"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVEL_TOLERANCE = 10  # grey levels; lossy codecs at these settings stay within about 4


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, MediaFile]:
    """Every real-world file, written once per session (about 2 s)."""
    out = tmp_path_factory.mktemp("real_world")
    files = formats.make_all(out)
    files["audio_only"] = formats.write_audio_only(out / "speech.m4a")
    return files


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def _grey(pixels: np.ndarray) -> float:
    """Median brightness of (..., H, W, 3) pixels: the frame's background level, ignoring the small
    moving square that ``formats.frames`` draws."""
    return float(np.median(pixels.astype(np.float32).mean(axis=-1)))


def _nearest_frame(seconds: float, made: MediaFile) -> int:
    """The frame shown at ``seconds``, clamped to the video (what a thumbnail must show)."""
    return int(min(made.num_frames - 1, max(0, np.floor(seconds * made.fps + 0.5))))


@pytest.mark.parametrize("name", VIDEOS)
def test_probe_gives_the_written_size_rate_and_duration(media, name):
    """For mkv and WebM the frames are counted; the duration is the video's even where the audio
    track runs 4 s longer (``mkv_audio_longer``)."""
    made = media[name]
    info = probe_video(made.path)
    assert (info.width, info.height) == (made.width, made.height)
    assert info.num_frames == made.num_frames
    assert info.fps == pytest.approx(made.fps)
    assert info.duration == pytest.approx(made.duration, abs=1 / made.fps)


@pytest.mark.parametrize("name", VIDEOS)
def test_decode_for_model_reads_the_right_frames(media, tiny_cfg, name):
    made = media[name]
    n, size = tiny_cfg.model.num_frames, tiny_cfg.data.clip_size
    got = decode_for_model(made.path, tiny_cfg)
    assert got.clip_frames.shape == (n, size, size, 3)
    assert got.selector_frames.shape[:3] == (
        n,
        tiny_cfg.model.selector.input_size,
        tiny_cfg.model.selector.input_size,
    )
    assert got.num_video_frames == made.num_frames
    assert np.array_equal(got.indices, sample_indices(made.num_frames, n, "segment"))
    np.testing.assert_allclose(got.timestamps, got.indices / made.fps, rtol=1e-6)
    assert got.timestamps.min() >= 0 and got.timestamps.max() <= made.duration
    assert got.duration == pytest.approx(made.duration, abs=1 / made.fps)
    shown = [_grey(frame) for frame in got.clip_frames]
    wanted = [level(int(i), made.num_frames) for i in got.indices]
    np.testing.assert_allclose(shown, wanted, atol=LEVEL_TOLERANCE)


@pytest.mark.parametrize("name", LONG)
def test_long_video_samples_span_the_whole_duration(media, tiny_cfg, name):
    """Minutes at 1-2 fps: the N sampled frames reach from the first segment to the last one."""
    made = media[name]
    assert made.duration >= 120
    got = decode_for_model(made.path, tiny_cfg)
    segment = made.duration / tiny_cfg.model.num_frames
    assert 0 <= got.timestamps[0] <= segment
    assert made.duration - segment <= got.timestamps[-1] <= made.duration
    assert np.all(np.diff(got.timestamps) > 0.8 * segment)
    assert _grey(got.clip_frames[-1]) > level(made.num_frames - 1, made.num_frames) - LEVEL_TOLERANCE - 12


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", VIDEOS)
def test_each_backend_decodes_each_format(media, name, backend):
    """No format here needs the fallback: decord and PyAV each decode every one, with the same frames."""
    made = media[name]
    got = decode_video(made.path, 6, "uniform", clip_size=48, selector_size=16, backend=backend)
    assert got.num_video_frames == made.num_frames
    wanted = [level(int(i), made.num_frames) for i in got.indices]
    np.testing.assert_allclose([_grey(f) for f in got.clip_frames], wanted, atol=LEVEL_TOLERANCE)


@pytest.mark.parametrize("name", VIDEOS)
def test_thumbnails_at_start_middle_and_past_the_end(media, name):
    made = media[name]
    for seconds in (0.0, made.duration / 2, made.duration + 10):
        data = thumbnail_png(made.path, seconds)
        assert data.startswith(PNG_SIGNATURE)
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        expected = level(_nearest_frame(seconds, made), made.num_frames)
        assert _grey(np.asarray(image)) == pytest.approx(expected, abs=LEVEL_TOLERANCE), seconds


def test_audio_only_file_is_refused_everywhere(media, tiny_cfg):
    """An .m4a (AAC in mp4) opens as a container but has no video: every entry point says so."""
    path = media["audio_only"].path
    calls = {
        "probe_video": lambda: probe_video(path),
        "decode_for_model": lambda: decode_for_model(path, tiny_cfg),
        "thumbnail_png": lambda: thumbnail_png(path, 0.0),
    }
    for name, call in calls.items():
        with pytest.raises(VideoDecodeError) as info:
            call()
        assert "no video stream" in info.value.reason, name
        assert info.value.path == str(path), name
