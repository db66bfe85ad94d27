"""`adaclip experiment selection` separates what selection buys from what MLP-Score buys."""

import pytest

from ray_jobs.experiment import EFFECTS, VARIANTS, summary


def result(r1: float) -> dict:
    return {"t2v": {"R1": r1, "R5": r1 + 10, "MedR": 2.0}, "gflops_per_video": 0.1}


def test_the_variants_are_a_full_two_by_two_plus_all_frames():
    cells = {tuple(sorted(v)) for v in VARIANTS.values()}
    for selection in ("learned", "uniform"):
        for aggregation in ("mlp", "mean"):
            assert (f"model.aggregation={aggregation}", f"model.selection={selection}") in cells
    for better, baseline in EFFECTS.values():  # each effect changes exactly one factor
        assert len(set(VARIANTS[better]) ^ set(VARIANTS[baseline])) == 2


def test_summary_reports_each_factors_effect():
    r1 = {"learned": 50.0, "learned_mean": 45.0, "uniform_mlp": 33.0, "uniform": 30.0, "all_frames": 31.0}
    out = summary({name: result(v) for name, v in r1.items()})
    assert out["learned"] == {"R1": 50.0, "R5": 60.0, "MedR": 2.0, "gflops_per_video": 0.1}
    assert out["effects"] == pytest.approx(
        {
            "selection_with_mlp": 17.0,
            "selection_with_mean": 15.0,
            "mlp_score_with_learned": 5.0,
            "mlp_score_with_uniform": 3.0,
        }
    )
