"""Long videos as windows: the plan's boundaries, and a one-pass decode that reads the right frames
of each window (checked against the grey level each frame was written with)."""

from __future__ import annotations

import numpy as np
import pytest
from formats import level, write

from adaclip.video.decode import decode_video
from adaclip.video.sampling import sample_indices
from adaclip.video.windows import plan_windows

LEVEL_TOLERANCE = 10


def spans(windows) -> list[tuple[int, int]]:
    return [(w.start_frame, w.end_frame) for w in windows]


@pytest.mark.parametrize(
    "num_frames, fps, window, overlap, expected",
    [
        (300, 10, 60, 0, [(0, 300)]),  # shorter than a window: one, as before
        (600, 10, 60, 0, [(0, 600)]),  # exactly one window
        (1800, 10, 60, 0, [(0, 600), (600, 1200), (1200, 1800)]),  # an exact multiple
        (1350, 10, 60, 0, [(0, 600), (600, 1200), (1200, 1350)]),  # the remainder: its own window
        (601, 10, 60, 0, [(0, 600), (600, 601)]),  # however short (as a live stream cuts it)
        (1500, 10, 60, 20, [(0, 600), (400, 1000), (800, 1400), (1200, 1500)]),  # overlapping
        (90, 1.5, 20, 0, [(0, 30), (30, 60), (60, 90)]),  # seconds -> frames at a fractional rate
    ],
    ids=["short", "one", "multiple", "remainder", "one-frame-remainder", "overlap", "fractional-fps"],
)
def test_plan_windows_boundaries(num_frames, fps, window, overlap, expected):
    windows = plan_windows(num_frames, fps, window, overlap)
    assert spans(windows) == expected
    assert [w.index for w in windows] == list(range(len(expected)))
    assert {w.count for w in windows} == {len(expected)}


@pytest.mark.parametrize("args", [(0, 10, 60, 0), (100, 0, 60, 0), (100, 10, 60, 60), (100, 10, 60, -1)])
def test_plan_windows_refuses_nonsense(args):
    with pytest.raises(ValueError):
        plan_windows(*args)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """150 s at 2 fps: frame i has grey level level(i, 300)."""
    return write(
        tmp_path_factory.mktemp("long") / "long.mkv", "mpeg4", 160, 96, 300, 2, options={"qscale": "3"}
    )


def test_decode_windows_samples_inside_each_window_and_reads_those_frames(long_video):
    from adaclip.video.windows import decode_windows

    got = list(decode_windows(long_video.path, 6, 60, clip_size=32, selector_size=16))
    assert [(g.window, g.num_windows) for g in got] == [(0, 3), (1, 3), (2, 3)]
    for g, (start, end) in zip(got, [(0, 120), (120, 240), (240, 300)], strict=True):
        assert g.span == pytest.approx((start / 2, end / 2))
        expected = start + sample_indices(end - start, 6, "segment")  # SPEC sampling inside the window
        assert g.indices.tolist() == expected.tolist()
        assert g.timestamps == pytest.approx(expected / 2)
        grey = np.median(g.clip_frames[:, 8:, 4:-4], axis=(1, 2, 3))
        wanted = [level(int(i), 300) for i in expected]
        assert np.abs(grey - wanted).max() <= LEVEL_TOLERANCE, (grey, wanted)
        assert g.duration == pytest.approx(150.0) and g.selector_frames.shape == (6, 16, 16, 1)


def test_a_video_of_one_window_decodes_as_before(long_video):
    from adaclip.video.windows import decode_windows

    (only,) = decode_windows(long_video.path, 8, 200, clip_size=32, selector_size=16)
    reference = decode_video(long_video.path, 8, "segment", clip_size=32, selector_size=16)
    np.testing.assert_array_equal(only.clip_frames, reference.clip_frames)
    np.testing.assert_array_equal(only.selector_frames, reference.selector_frames)
    np.testing.assert_array_equal(only.indices, reference.indices)
    assert (only.window, only.num_windows, only.span) == (0, 1, (0.0, 150.0))
