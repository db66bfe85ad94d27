"""Hardening limits: absurd frame sizes are refused from the header, decoded frames are capped in
size, and probing or decoding one file stops with a clear error once its time budget is spent."""

from __future__ import annotations

from collections.abc import Callable

import formats  # tests/video/formats.py: pytest puts this folder on sys.path (no __init__.py here)
import numpy as np
import pytest
from formats import MediaFile

from adaclip.errors import VideoDecodeError
from adaclip.video import decode, probe, readers
from adaclip.video.decode import decode_frames_chunked, decode_video
from adaclip.video.probe import (
    DECODE_DEADLINE_S,
    MAX_ASPECT_RATIO,
    MAX_FRAME_SIDE,
    Deadline,
    DeadlineExceeded,
    check_frame_size,
    inspect_video,
    probe_video,
)
from adaclip.video.transforms import MAX_DECODE_SIDE, scaled_size


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, MediaFile]:
    """Small real files: strips and an over-wide frame (refused), the widest accepted shape, and
    ordinary mp4 and mkv (the mkv has no frame count in its header, so probing counts packets)."""
    out = tmp_path_factory.mktemp("limits")
    return {
        "strip_2x4096": formats.write(out / "strip_2x4096.mkv", "ffv1", 2, 4096, 1, 1, pix_fmt="gray"),
        "strip_16x4096": formats.write(out / "strip_16x4096.mp4", "mpeg4", 16, 4096, 2, 2),
        "wide_8193": formats.write(out / "wide_8193x1025.mkv", "ffv1", 8193, 1025, 1, 1, pix_fmt="gray"),
        "ratio_8": formats.write(out / "ratio_8_1024x128.mp4", "mpeg4", 1024, 128, 4, 4),
        "mp4": formats.write(out / "plain.mp4", "mpeg4", 96, 64, 48, 8),
        "mkv": formats.write(out / "plain.mkv", "mpeg4", 96, 64, 20, 8),
    }


# ---------------------------------------------------------------- frame size


@pytest.mark.parametrize(
    "width, height",
    [
        (1920, 1080),
        (1080, 1920),  # portrait phone video
        (7680, 4320),  # 8K UHD
        (MAX_FRAME_SIDE, MAX_FRAME_SIDE // 2),
        (3584, 1008),  # 32:9 panorama, 3.56:1
        (321, 241),
        (1024, 128),  # exactly 8:1
        (1, 1),
    ],
)
def test_real_frame_sizes_pass(width, height):
    check_frame_size("x.mp4", width, height)


@pytest.mark.parametrize(
    "width, height, reason",
    [
        (MAX_FRAME_SIDE + 1, 1080, "frame size 8193x1080 is too large: a side may be at most 8192 px"),
        (1080, MAX_FRAME_SIDE + 1, "frame size 1080x8193 is too large"),
        (65535, 65535, "frame size 65535x65535 is too large"),
        (2, 4096, "frame size 2x4096 has an aspect ratio of 2048:1, more than the 8:1 accepted"),
        (4096, 16, "frame size 4096x16 has an aspect ratio of 256:1"),
        (1025, 128, "frame size 1025x128 has an aspect ratio of 8.008:1"),
        (0, 480, "not a video container: frame size 0x480"),
    ],
)
def test_absurd_frame_sizes_are_refused(width, height, reason):
    with pytest.raises(VideoDecodeError) as info:
        check_frame_size("x.mp4", width, height)
    assert info.value.reason.startswith(reason), info.value.reason


def test_limits_are_sensible():
    assert MAX_FRAME_SIDE >= 7680 and 32 / 9 < MAX_ASPECT_RATIO <= 10


@pytest.mark.parametrize(
    "name, reason",
    [("strip_2x4096", "aspect ratio"), ("strip_16x4096", "aspect ratio"), ("wide_8193", "too large")],
)
def test_absurd_files_are_refused_at_the_header(files, name, reason):
    """Every entry point refuses them before decoding a frame: probe, inspect, decode (both
    backends, the fallback too) and the chunked decode behind thumbnails."""
    path = files[name].path
    calls: dict[str, Callable[[], object]] = {
        "probe_video": lambda: probe_video(path),
        "inspect_video": lambda: inspect_video(path),
        "decode_video auto": lambda: decode_video(path, 4, clip_size=224),
        "decode_video decord": lambda: decode_video(path, 4, clip_size=224, backend="decord"),
        "decode_video pyav": lambda: decode_video(path, 4, clip_size=224, backend="pyav"),
        "decode_frames_chunked": lambda: next(decode_frames_chunked(path, [0], 256)),
    }
    for call_name, call in calls.items():
        with pytest.raises(VideoDecodeError) as info:
            call()
        assert reason in info.value.reason, (call_name, info.value.reason)
        assert info.value.path == str(path)


def test_widest_accepted_shape_decodes(files):
    made = files["ratio_8"]
    info = probe_video(made.path)
    assert (info.width, info.height, info.num_frames) == (1024, 128, 4)
    got = decode_video(made.path, 4, "uniform", clip_size=224)
    assert got.clip_frames.shape == (4, 224, 224, 3)
    wanted = [formats.level(i, 4) for i in range(4)]
    np.testing.assert_allclose(np.median(got.clip_frames.mean(axis=-1), axis=(1, 2)), wanted, atol=10)


@pytest.mark.parametrize(
    "width, height, short_side, max_side",
    [
        (2, 4096, 224, None),  # 224 x 458,752 uncapped
        (4096, 2, 224, None),
        (65535, 1, 336, None),
        (1024, 128, 512, None),  # 4096 x 512 uncapped
        (1920, 1080, 4096, None),  # a huge crop size asked for
        (2, 4096, 224, 100_000),  # a caller's cap above the global one
    ],
)
def test_decode_size_is_capped_whatever_the_input(width, height, short_side, max_side):
    w, h = scaled_size(width, height, short_side, max_side)
    assert 1 <= w <= MAX_DECODE_SIDE and 1 <= h <= MAX_DECODE_SIDE
    assert (w >= h) == (width >= height)  # orientation kept


def test_ordinary_decode_sizes_are_unchanged():
    assert scaled_size(1280, 720, 224) == (398, 224)
    assert scaled_size(720, 1280, 224) == (224, 398)
    assert scaled_size(1024, 128, 224) == (1792, 224)  # 8:1 at CLIP size stays under the cap
    assert scaled_size(1024, 128, 224, max_side=896) == (896, 112)  # a caller's smaller cap still wins


def test_decoder_is_asked_for_capped_frames(files, monkeypatch):
    """An 8:1 video at crop size 512 would decode at 4096 x 512; the reader gets 2048 x 256 and the
    crop is upscaled to 512."""
    sizes = []

    class Recording(readers.FallbackReader):
        def __init__(self, path, info, width, height, **kwargs):
            sizes.append((width, height))
            super().__init__(path, info, width, height, **kwargs)

    monkeypatch.setattr(decode, "FallbackReader", Recording)
    got = decode_video(files["ratio_8"].path, 2, clip_size=512, selector_size=32)
    assert sizes == [(MAX_DECODE_SIDE, MAX_DECODE_SIDE // 8)]
    assert got.clip_frames.shape == (2, 512, 512, 3)


# ---------------------------------------------------------------- time budget


class Ticks:
    """A fake clock for ``Deadline``: advances ``step`` seconds each time it is read."""

    def __init__(self, step: float = 1.0):
        self.now, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        self.reads += 1
        return value


@pytest.mark.parametrize("budget", [0.0, 1e-6])
def test_tiny_deadline_stops_probing(files, budget):
    """mp4 (count in the header) and mkv (packets counted) both stop with the reason."""
    for name in ("mp4", "mkv"):
        with pytest.raises(VideoDecodeError) as info:
            probe_video(files[name].path, deadline=budget)
        assert isinstance(info.value, DeadlineExceeded)
        assert info.value.reason.startswith("probing"), info.value.reason
        assert f"took longer than {budget:g} s" in info.value.reason


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_tiny_deadline_stops_decoding(files, backend):
    for name in ("mp4", "mkv"):
        path = files[name].path
        with pytest.raises(VideoDecodeError, match=r"took longer than 1e-06 s"):
            decode_video(path, 8, clip_size=32, backend=backend, deadline=1e-6)
        with pytest.raises(VideoDecodeError, match=r"took longer than 0 s"):
            next(decode_frames_chunked(path, [0, 5], 32, backend=backend, deadline=0.0))


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_normal_deadline_passes(files, backend):
    for name in ("mp4", "mkv"):
        made = files[name]
        assert probe_video(made.path, deadline=DECODE_DEADLINE_S).num_frames == made.num_frames
        got = decode_video(made.path, 8, clip_size=32, backend=backend, deadline=30.0)
        assert got.num_video_frames == made.num_frames
        default = decode_video(made.path, 8, clip_size=32, backend=backend)
        assert np.array_equal(got.clip_frames, default.clip_frames)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_deadline_is_checked_between_frames(files, backend, monkeypatch):
    """With a clock that moves 1 s per read and 2.5 s of budget, the header check (t=1) and the
    first frame (t=2) pass and the second frame (t=3) stops the decode: checks come per frame,
    not per batch (decord's batch of a single-keyframe file decodes the whole file)."""
    fetched = []
    original = readers.DecordSource._get_batch

    def counting(self, part, retries=2):
        fetched.append(list(part))
        return original(self, part, retries)

    monkeypatch.setattr(readers.DecordSource, "_get_batch", counting)
    with pytest.raises(DeadlineExceeded, match=r"^.*decoding took longer than 2.5 s"):
        decode_video(
            files["mp4"].path, 8, "uniform", clip_size=32, backend=backend, deadline=Deadline(2.5, Ticks())
        )
    assert fetched == ([[0]] if backend == "decord" else [])


def test_deadline_ends_the_decode_without_falling_back(files, monkeypatch):
    """Out of time in decord, 'auto' raises at once instead of starting again with PyAV."""

    def no_pyav(*args, **kwargs):
        raise AssertionError("PyAV fallback started after the deadline")

    monkeypatch.setattr(readers, "PyAVSource", no_pyav)
    with pytest.raises(DeadlineExceeded, match="decoding took longer"):
        decode_video(files["mp4"].path, 8, clip_size=32, deadline=Deadline(2.5, Ticks()))


def test_deadline_stops_packet_counting(files):
    """mkv: the header check (t=1) passes, the counting loop's first check (t=2) stops it."""
    with pytest.raises(DeadlineExceeded) as info:
        probe_video(files["mkv"].path, deadline=Deadline(1.5, Ticks()))
    assert info.value.reason.startswith("probing (counting frames) took longer than 1.5 s")


def test_packet_cap_stops_counting(files, monkeypatch):
    """A header without a frame count and a flood of packets: counting stops at the cap."""
    monkeypatch.setattr(probe, "MAX_COUNTED_PACKETS", 19)
    with pytest.raises(VideoDecodeError, match="more than 19 video packets"):
        probe_video(files["mkv"].path)
    monkeypatch.setattr(probe, "MAX_COUNTED_PACKETS", 20)
    assert probe_video(files["mkv"].path).num_frames == 20


def test_time_between_chunks_is_not_the_decoders(files):
    """decode_frames_chunked pauses its deadline while the caller holds a chunk: a caller that
    spends 100 s per chunk (say, encoding it) does not use up a 10 s budget."""
    clock = Ticks(step=0.0)
    chunks = 0
    for chunk in decode_frames_chunked(
        files["mp4"].path, np.arange(0, 48, 4), 32, chunk=2, deadline=Deadline(10.0, clock)
    ):
        chunks += 1
        assert chunk.shape == (2, 32, 32, 3)
        clock.now += 100.0
    assert chunks == 6


def test_deadline_validates_and_pauses():
    with pytest.raises(ValueError):
        Deadline(-1.0)
    clock = Ticks(step=0.0)
    deadline = Deadline(5.0, clock)
    with deadline.paused():
        clock.now = 1000.0
    assert not deadline.expired()
    clock.now += 5.5
    assert deadline.expired()
    assert Deadline.of(deadline) is deadline and Deadline.of(3).seconds == 3.0
    assert not Deadline(float("inf")).expired()
