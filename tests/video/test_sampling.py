"""Frame sampling against SPEC section 1, with the formulas written out independently here."""

import numpy as np
import pytest

from adaclip.video import sample_indices

LENGTHS = [1, 2, 3, 5, 7, 10, 16, 17, 31, 48, 100, 301]
COUNTS = [1, 2, 3, 4, 8, 12, 16, 32, 64]


def segment_reference(length: int, n: int) -> list[int]:
    """Midpoint of segment i, whose integer bounds are floor(i*L/N) and floor((i+1)*L/N)."""
    out = []
    for i in range(n):
        start = (i * length) // n
        end = ((i + 1) * length) // n
        out.append((start + end) // 2)
    return out


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("n", COUNTS)
def test_segment_matches_formula(length, n):
    got = sample_indices(length, n, "segment")
    assert got.dtype == np.int64 and got.shape == (n,)
    assert got.tolist() == segment_reference(length, n)
    assert np.all(np.diff(got) >= 0) and got.min() >= 0 and got.max() < length


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("n", COUNTS)
def test_uniform_matches_formula(length, n):
    got = sample_indices(length, n, "uniform")
    assert got.dtype == np.int64 and got.shape == (n,)
    assert got.tolist() == [int(np.floor(i * length / n)) for i in range(n)]


def test_segment_picks_one_frame_inside_each_segment():
    length, n = 100, 8
    got = sample_indices(length, n, "segment")
    edges = [i * length / n for i in range(n + 1)]
    for i, index in enumerate(got):
        assert edges[i] - 1 < index < edges[i + 1]
    assert got.tolist() == [6, 18, 31, 43, 56, 68, 81, 93]


@pytest.mark.parametrize("mode", ["segment", "uniform", "random"])
def test_short_video_repeats_instead_of_failing(mode):
    got = sample_indices(3, 8, mode, np.random.default_rng(0))
    assert got.shape == (8,) and got.dtype == np.int64
    assert set(got.tolist()) == {0, 1, 2}  # every frame used, indices repeat
    assert np.all(np.diff(got) >= 0)


def test_random_is_sorted_distinct_and_seeded():
    for seed in range(20):
        got = sample_indices(48, 16, "random", np.random.default_rng(seed))
        assert got.dtype == np.int64 and got.shape == (16,)
        assert np.all(np.diff(got) > 0)  # sorted and distinct
        assert got.min() >= 0 and got.max() < 48
    a = sample_indices(48, 16, "random", np.random.default_rng(7))
    b = sample_indices(48, 16, "random", np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_indices(48, 16, "random", np.random.default_rng(8)))


def test_random_covers_frames_uniformly():
    rng = np.random.default_rng(0)
    length, n, draws = 10, 4, 4000
    counts = np.zeros(length)
    for _ in range(draws):
        counts[sample_indices(length, n, "random", rng)] += 1
    share = counts / draws  # each frame is picked with probability N / L = 0.4
    assert np.all(np.abs(share - n / length) < 0.04), share


def test_random_equal_length_takes_every_frame():
    got = sample_indices(12, 12, "random", np.random.default_rng(1))
    assert got.tolist() == list(range(12))


def test_random_without_rng_works():
    got = sample_indices(30, 5, "random")
    assert got.shape == (5,) and np.all(np.diff(got) > 0)


@pytest.mark.parametrize("mode", ["segment", "uniform", "random"])
def test_empty_video_raises(mode):
    with pytest.raises(ValueError, match="0 decodable frames"):
        sample_indices(0, 8, mode)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(10, 0, "segment")
    with pytest.raises(ValueError, match="unknown sampling mode"):
        sample_indices(10, 4, "middle")  # type: ignore[arg-type]
