"""adaclip.metrics on hand-worked examples and against a brute-force loop written from SPEC.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaclip.metrics import t2v_metrics, t2v_ranks, v2t_metrics, v2t_ranks


def summary(ranks: list[int]) -> dict[str, float]:
    r = np.array(ranks)
    out = {f"R{k}": 100.0 * np.mean(r < k) for k in (1, 5, 10, 50)}
    out["MedR"] = float(np.median(r + 1))
    out["MeanR"] = float(np.mean(r + 1))
    return out


def assert_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == {"R1", "R5", "R10", "R50", "MedR", "MeanR"}
    for key, value in want.items():
        assert isinstance(got[key], float)
        assert got[key] == pytest.approx(value, abs=1e-9), key


# ---------------------------------------------------------------- hand-worked examples
SQUARE = np.array(
    [
        [0.9, 0.35, 0.75],  # caption 0 -> video 0: best in row           t2v rank 0
        [0.8, 0.3, 0.2],  # caption 1 -> video 1: 0.8 beats it            t2v rank 1
        [0.1, 0.2, 0.7],  # caption 2 -> video 2: best in row             t2v rank 0
    ]
)


def test_square_3x3_known_ranks():
    assert t2v_ranks(SQUARE).tolist() == [0, 1, 0]
    assert_metrics(
        t2v_metrics(SQUARE),
        {"R1": 200 / 3, "R5": 100.0, "R10": 100.0, "R50": 100.0, "MedR": 1.0, "MeanR": 4 / 3},
    )
    # Columns: video 0 [0.9, 0.8, 0.1] own caption top -> 0; video 1 [0.35, 0.3, 0.2] -> 1;
    # video 2 [0.75, 0.2, 0.7] -> 1.
    assert v2t_ranks(SQUARE).tolist() == [0, 1, 1]
    assert_metrics(
        v2t_metrics(SQUARE),
        {"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "R50": 100.0, "MedR": 2.0, "MeanR": 5 / 3},
    )


MULTI = np.array(
    [
        [0.5, 0.85, 0.1],  # caption 0 -> video 0: 0.85 above    t2v rank 1
        [0.9, 0.2, 0.3],  # caption 1 -> video 0                 t2v rank 0
        [0.4, 0.3, 0.35],  # caption 2 -> video 1: 0.4, 0.35     t2v rank 2
        [0.1, 0.8, 0.2],  # caption 3 -> video 1                 t2v rank 0
    ]
)
MULTI_G = [0, 0, 1, 1]  # video 2 is a distractor with no caption


def test_several_captions_per_video():
    assert t2v_ranks(MULTI, MULTI_G).tolist() == [1, 0, 2, 0]
    assert_metrics(t2v_metrics(MULTI, MULTI_G), {"R1": 50.0, "R5": 100.0, "MedR": 1.5, "MeanR": 1.75})


def test_v2t_with_several_captions_takes_best_own_caption():
    # Video 0 column [0.5, 0.9, 0.4, 0.1]: caption 1 is top -> 0.
    # Video 1 column [0.85, 0.2, 0.3, 0.8]: caption 2 has rank 2, caption 3 rank 1 -> min 1.
    # Video 2 has no caption and is left out.
    assert v2t_ranks(MULTI, MULTI_G).tolist() == [0, 1]
    assert_metrics(v2t_metrics(MULTI, MULTI_G), {"R1": 50.0, "R5": 100.0, "MedR": 1.5, "MeanR": 1.5})


def test_ties_favour_the_true_video():
    sims = np.array([[0.5, 0.5], [0.2, 0.2]])
    assert t2v_ranks(sims).tolist() == [0, 0]  # each true video tied with the other: rank 0
    assert t2v_metrics(sims)["R1"] == 100.0
    # Column 1 is [0.5, 0.2]: caption 1 has 0.5 strictly above it.
    assert v2t_ranks(sims).tolist() == [0, 1]
    flat = np.full((3, 3), 0.3)
    assert t2v_ranks(flat).tolist() == [0, 0, 0] and v2t_ranks(flat).tolist() == [0, 0, 0]


def test_recall_thresholds_are_strict():
    # Caption 0's video is beaten by exactly 5 others: rank 5 counts for R10 but not R5.
    sims = np.zeros((1, 12))
    sims[0, 1:6] = 1.0
    got = t2v_metrics(sims, [0])
    assert_metrics(got, {"R1": 0.0, "R5": 0.0, "R10": 100.0, "R50": 100.0, "MedR": 6.0, "MeanR": 6.0})


# ---------------------------------------------------------------- brute force from SPEC
def brute_t2v(sims: np.ndarray, g: list[int]) -> list[int]:
    ranks = []
    for i in range(sims.shape[0]):
        ranks.append(sum(1 for v in range(sims.shape[1]) if sims[i, v] > sims[i, g[i]]))
    return ranks


def brute_v2t(sims: np.ndarray, g: list[int]) -> list[int]:
    ranks = []
    for v in range(sims.shape[1]):
        own = [i for i in range(sims.shape[0]) if g[i] == v]
        if not own:
            continue
        per_caption = [sum(1 for j in range(sims.shape[0]) if sims[j, v] > sims[i, v]) for i in own]
        ranks.append(min(per_caption))
    return ranks


@pytest.mark.parametrize("seed", range(6))
def test_random_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_videos = int(rng.integers(1, 60))
    num_captions = int(rng.integers(1, 80))
    g = rng.integers(0, num_videos, size=num_captions).tolist()
    if seed % 2:
        sims = rng.integers(0, 4, size=(num_captions, num_videos)).astype(float)  # many ties
    else:
        sims = rng.normal(size=(num_captions, num_videos))
    assert t2v_ranks(sims, g).tolist() == brute_t2v(sims, g)
    assert v2t_ranks(sims, g).tolist() == brute_v2t(sims, g)
    assert_metrics(t2v_metrics(sims, g), summary(brute_t2v(sims, g)))
    assert_metrics(v2t_metrics(sims, g), summary(brute_v2t(sims, g)))


def test_random_square_default_mapping():
    sims = np.random.default_rng(9).normal(size=(70, 70))
    g = list(range(70))
    assert_metrics(t2v_metrics(sims), summary(brute_t2v(sims, g)))
    assert_metrics(v2t_metrics(sims), summary(brute_v2t(sims, g)))


# ---------------------------------------------------------------- input types
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_inputs_any_float_dtype(dtype):
    sims = torch.tensor(MULTI).to(dtype)
    rounded = sims.double().numpy()  # values as the caller holds them
    for mapping in (MULTI_G, torch.tensor(MULTI_G), np.array(MULTI_G, dtype=np.int32)):
        assert_metrics(t2v_metrics(sims, mapping), summary(brute_t2v(rounded, MULTI_G)))
        assert_metrics(v2t_metrics(sims, mapping), summary(brute_v2t(rounded, MULTI_G)))


def test_requires_grad_and_numpy_float32_inputs():
    sims = torch.tensor(SQUARE, requires_grad=True)
    assert t2v_ranks(sims).tolist() == [0, 1, 0]
    assert v2t_ranks(SQUARE.astype(np.float32)).tolist() == [0, 1, 1]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [t2v_metrics, v2t_metrics])
def test_clear_errors(fn):
    with pytest.raises(ValueError, match="not square"):
        fn(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="one video column per caption"):
        fn(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match="outside the 4 videos"):
        fn(np.zeros((3, 4)), [0, 1, 4])
    with pytest.raises(ValueError, match="outside"):
        fn(np.zeros((3, 4)), [0, -1, 2])
    with pytest.raises(ValueError, match="integer"):
        fn(np.zeros((3, 4)), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        fn(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([[np.nan, 0.0], [0.0, 1.0]]))
