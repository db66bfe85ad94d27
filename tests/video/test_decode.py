"""Decoding real encoded files: shapes, indices, the synthetic corpus' content, bad files, memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from adaclip.data.synth import make_corpus
from adaclip.errors import VideoDecodeError
from adaclip.video import decode_frames_chunked, decode_video, probe_video, sample_indices, write_video
from adaclip.video.probe import VideoInfo
from adaclip.video.readers import FallbackReader

FRAMES, SIZE, FPS = 48, 64, 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, videos=6, seed=3, frames_per_video=FRAMES, size=SIZE, fps=FPS)
    return out, json.loads((out / "corpus.json").read_text())


@pytest.fixture(scope="module")
def video(corpus) -> Path:
    out, manifest = corpus
    return out / manifest["items"][0]["video"]


def test_probe_reads_the_header(video):
    info = probe_video(video)
    assert (info.num_frames, info.width, info.height) == (FRAMES, SIZE, SIZE)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(FRAMES / FPS, abs=0.2)


@pytest.mark.parametrize("mode", ["segment", "uniform"])
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_shapes_indices_and_timestamps(video, mode, backend):
    got = decode_video(video, 16, mode, clip_size=32, selector_size=16, backend=backend)
    assert got.clip_frames.shape == (16, 32, 32, 3) and got.clip_frames.dtype == np.uint8
    assert got.selector_frames.shape == (16, 16, 16, 1) and got.selector_frames.dtype == np.uint8
    assert got.indices.dtype == np.int64
    assert np.array_equal(got.indices, sample_indices(FRAMES, 16, mode))
    assert got.timestamps.dtype == np.float32
    np.testing.assert_allclose(got.timestamps, got.indices / FPS, rtol=1e-6)
    assert got.num_video_frames == FRAMES and got.fps == pytest.approx(FPS)
    assert got.duration == pytest.approx(FRAMES / FPS)


def test_random_sampling_uses_the_rng_and_rgb_selector(video):
    got = decode_video(
        video,
        8,
        "random",
        clip_size=64,
        selector_size=24,
        selector_grayscale=False,
        rng=np.random.default_rng(5),
    )
    assert np.array_equal(got.indices, sample_indices(FRAMES, 8, "random", np.random.default_rng(5)))
    assert got.selector_frames.shape == (8, 24, 24, 3)


def test_upscale_and_more_frames_than_the_video(video):
    got = decode_video(video, 60, "segment", clip_size=96, selector_size=56)
    assert got.clip_frames.shape == (60, 96, 96, 3)
    assert np.array_equal(got.indices, sample_indices(FRAMES, 60, "segment"))
    first_repeat = int(np.flatnonzero(np.diff(got.indices) == 0)[0])
    assert np.array_equal(got.clip_frames[first_repeat], got.clip_frames[first_repeat + 1])


def test_container_without_a_frame_count(tmp_path):
    """mkv headers carry no frame count: the header read estimates it, probe_video counts it."""
    path = tmp_path / "clip.mkv"
    write_video(path, (np.full((48, 64, 3), i * 10, np.uint8) for i in range(20)), fps=8, codec="ffv1")
    assert probe_video(path).num_frames == 20
    for backend in ("decord", "pyav"):
        got = decode_video(path, 5, "uniform", clip_size=32, backend=backend)
        assert got.num_video_frames == 20 and got.indices.tolist() == [0, 4, 8, 12, 16]
        np.testing.assert_allclose(got.clip_frames.reshape(5, -1).mean(axis=1), got.indices * 10, atol=3)


def test_decord_and_pyav_agree(video):
    a = decode_video(video, 12, clip_size=64, backend="decord")
    b = decode_video(video, 12, clip_size=64, backend="pyav")
    assert np.array_equal(a.indices, b.indices)
    assert np.abs(a.clip_frames.astype(int) - b.clip_frames.astype(int)).mean() < 3


def test_informative_frames_differ_from_distractors(corpus):
    """The corpus design holds in the decoded pixels: only the captioned span shows a saturated,
    dark-outlined object, visible in the RGB view and in the cheap grey selector view."""
    out, manifest = corpus
    for item in manifest["items"]:
        got = decode_video(out / item["video"], FRAMES, "uniform", clip_size=SIZE, selector_size=32)
        assert np.array_equal(got.indices, np.arange(FRAMES))
        rgb = got.clip_frames.astype(int)
        saturated = ((rgb.max(-1) - rgb.min(-1)) > 70).sum(axis=(1, 2))  # (F,) vivid pixels per frame
        darkest = got.selector_frames.reshape(FRAMES, -1).min(axis=1)  # (F,) grey minimum per frame
        start, stop = item["informative"]
        inside = np.zeros(FRAMES, dtype=bool)
        inside[start:stop] = True
        assert 3 <= inside.sum() <= 6
        if item["colour"] != "white":
            assert saturated[inside].min() >= 15, (item, saturated)
        assert saturated[~inside].max() <= 2, (item, saturated)
        assert darkest[inside].max() < darkest[~inside].min() - 10, (item, darkest)


def test_chunked_decoding_matches_decode_video(video):
    indices = sample_indices(FRAMES, 40, "segment")
    chunks = list(decode_frames_chunked(video, indices, size=SIZE, chunk=16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    full = decode_video(video, 40, "segment", clip_size=SIZE)
    assert np.array_equal(np.concatenate(chunks), full.clip_frames)
    with pytest.raises(VideoDecodeError, match="outside"):
        list(decode_frames_chunked(video, [0, FRAMES], size=SIZE))


# ---------------------------------------------------------------- bad input


def _write_gif(path: Path, frames: int = 20) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb8"
        for i in range(frames):
            image = np.full((32, 48, 3), i * 12, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def bad_files(tmp_path, video) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected start of the reason)."""
    data = video.read_bytes()
    files = {
        "missing": (tmp_path / "missing.mp4", "file does not exist"),
        "empty": (tmp_path / "empty.mp4", "file is empty"),
        "text": (tmp_path / "notes.mp4", "not a video container"),
        "truncated": (tmp_path / "truncated.mp4", "truncated"),
        "random": (tmp_path / "random.mp4", "not a video container"),
        "audio": (tmp_path / "audio.mp4", "not a video container"),
        "directory": (tmp_path / "folder.mp4", "not a regular file"),
    }
    files["empty"][0].write_bytes(b"")
    files["text"][0].write_text("this is not a video\n" * 50)
    files["truncated"][0].write_bytes(data[: int(len(data) * 0.3)])
    files["random"][0].write_bytes(np.random.default_rng(0).bytes(20000))
    _write_audio_only(files["audio"][0])
    files["directory"][0].mkdir()
    return files


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_bad_files_raise_a_clear_error(bad_files, backend):
    for name, (path, reason) in bad_files.items():
        with pytest.raises(VideoDecodeError) as info:
            decode_video(path, 8, clip_size=32, backend=backend)
        assert info.value.path == str(path), name
        assert info.value.reason.startswith(reason), (name, info.value.reason)
        assert str(path) in str(info.value)


def test_truncated_faststart_mp4_raises(tmp_path):
    """With the index first (web uploads), a cut file still opens; the box walk catches it."""
    frames = (np.full((32, 32, 3), i * 5, np.uint8) for i in range(40))
    whole = tmp_path / "whole.mp4"
    write_video(whole, frames, fps=8, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert decode_video(whole, 4, clip_size=32).clip_frames.shape == (4, 32, 32, 3)
    with pytest.raises(VideoDecodeError, match="truncated"):
        decode_video(cut, 4, clip_size=32)


def test_fallback_reader_reports_truncation_found_while_decoding(tmp_path):
    """Past the cheap checks (called directly here), decord refuses the cut file, PyAV decodes
    what is there and the error says how far it got."""
    frames = (np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(40))
    whole = tmp_path / "whole.mp4"
    write_video(whole, frames, fps=8, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with FallbackReader(cut, VideoInfo(40, 8.0, 5.0, 32, 32), 32, 32) as reader:
        assert reader.backend == "pyav"
        first = next(reader.iter_frames(np.array([0])))
        assert first.shape == (32, 32, 3)
        with pytest.raises(VideoDecodeError, match=r"truncated: only \d+ of 40 frames decode") as info:
            list(reader.iter_frames(np.arange(0, 40, 3)))
    assert info.value.path == str(cut)


def test_pyav_fallback_for_a_container_decord_refuses(tmp_path):
    gif = tmp_path / "anim.gif"
    _write_gif(gif)
    with pytest.raises(VideoDecodeError, match="decord cannot open"):
        decode_video(gif, 4, clip_size=32, backend="decord")
    got = decode_video(gif, 4, "uniform", clip_size=32, selector_size=8)
    assert np.array_equal(got.indices, sample_indices(20, 4, "uniform"))
    brightness = got.clip_frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(brightness, got.indices * 12, atol=4)  # the right frames, in order
    assert got.selector_frames.shape == (4, 8, 8, 1)


# ---------------------------------------------------------------- memory

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from adaclip.video import decode_video, probe_video
    probe_video(sys.argv[1])  # warm imports and lazy library state before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = decode_video(sys.argv[1], 16, clip_size=224, selector_size=56, backend=sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "shape": list(got.clip_frames.shape)}))
    """
)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """1280x720, 240 frames: 663 MB once fully decoded to RGB."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    base = np.full((720, 1280, 3), 90, np.uint8)
    base[..., 1] = (np.arange(1280) // 5 % 256).astype(np.uint8)

    def frames():
        for i in range(240):
            frame = base.copy()
            x = (i * 5) % 1180
            frame[300:400, x : x + 100] = (250, 30, 30)
            yield frame

    write_video(path, frames(), fps=30, codec="libx264", options={"preset": "ultrafast"})
    return path


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_long_video_decodes_within_a_memory_bound(long_video, backend):
    """Peak RSS growth during decode_video stays under 120 MiB, a fifth of the full decode."""
    bound_kib = 120 * 1024
    full_decode_kib = 1280 * 720 * 3 * 240 // 1024
    assert bound_kib < full_decode_kib / 5
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(long_video), backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [16, 224, 224, 3]
    assert report["growth_kib"] < bound_kib, report


@pytest.mark.parametrize("size", [24, 48, 72])
def test_decord_output_width_quirk_is_worked_around(video, size):
    """decord 0.6.0 fails to output frames of some widths (48 px among them); still decoded by decord."""
    a = decode_video(video, 6, clip_size=size, backend="decord")
    b = decode_video(video, 6, clip_size=size, backend="pyav")
    assert a.clip_frames.shape == b.clip_frames.shape == (6, size, size, 3)
    assert np.abs(a.clip_frames.astype(int) - b.clip_frames.astype(int)).mean() < 5
