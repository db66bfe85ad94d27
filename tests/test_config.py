from pathlib import Path

import pytest

from adaclip.config import Config, load_config
from adaclip.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
TRAINING_CONFIGS = [p for p in CONFIGS if p.stem != "serve"]


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.model.top_k <= cfg.model.num_frames


def test_adaclip_commands_map_one_to_one():
    expected = {"msrvtt": (16, 12, "random"), "didemo": (32, 16, "concat"), "activitynet": (64, 32, "concat")}
    for name, (n, k, captions) in expected.items():
        cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
        assert (cfg.model.num_frames, cfg.model.top_k, cfg.data.caption_mode) == (n, k, captions)
        assert cfg.model.aggregation == "mlp" and cfg.model.selector.freeze_backbone
    assert load_config(Path(__file__).parents[1] / "configs" / "didemo.yaml").train.epochs == 5


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["model.top_k=3", "train.use_gpu=true", "index.path=" + str(tmp_path)])
    assert cfg.model.top_k == 3 and cfg.train.use_gpu is True and cfg.index.path == tmp_path


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["model.top_kk=3"], "model.top_kk"),
        (["model.top_k=many"], "model.top_k"),
        (["model.aggregation=median"], "model.aggregation"),
        (["train.lr=-1"], "train.lr"),
        (["model.num_frames=4", "model.top_k=8"], "top_k=8"),
    ],
)
def test_bad_field_is_named(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_key_in_yaml_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  selector:\n    backbone: raw\n    colour: red\n")
    with pytest.raises(ConfigError, match=r"model\.selector\.colour"):
        load_config(path)


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["model.top_k"])


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None, ["data.video_root=videos", "model.clip.pretrained=clip.pt", "train.output_dir=runs/x"]
    )
    assert cfg.data.video_root == tmp_path / "videos"
    assert cfg.train.output_dir == tmp_path / "runs" / "x"
    assert cfg.model.clip.pretrained == str(tmp_path / "clip.pt")
    assert load_config(None, ["model.clip.pretrained=openai"]).model.clip.pretrained == "openai"
