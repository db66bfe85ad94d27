from pathlib import Path

import matplotlib.image as mpimg
import torch

from adaclip.config import load_config
from adaclip.models import AdaCLIP
from adaclip.plots import plot_evaluation

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _result(r1):
    return {"t2v": {"R1": r1, "R5": 2 * r1, "R10": 80.0, "R50": 100.0}}


def test_plots_are_written(tmp_path, tiny_overrides):
    cfg = load_config(TINY, tiny_overrides)
    torch.manual_seed(0)
    model = AdaCLIP.from_config(cfg.model).eval()
    paths = plot_evaluation(
        {"learned": _result(40.0), "uniform": _result(20.0)}, model, cfg, tmp_path, videos=2
    )
    assert [p.rsplit("/", 1)[1] for p in paths] == ["recall.png", "selection.png"]
    for p in paths:
        image = mpimg.imread(p)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
