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


# AdaCLIP's argument defaults (its configs/config.py) under this project's config keys; the policy
# network reads 224 px views (max_img_size; --rescale_size 56 only applies to the raw backbone).
REFERENCE_DEFAULTS = {
    "model.clip.name": "ViT-B-32",
    "model.selector.backbone": "mobilenet_v3_large",
    "model.selector.input_size": 224,
    "model.selector.temporal": "transformer",
    "model.selector.hidden_dim": 512,
    "model.selector.mlp_hidden": 1024,
    "model.selector.scorer": "mlp",
    "model.sim_header": "none",
    "model.word_agg": "none",
    "model.frame_agg_temp": 1.0,
    "data.clip_size": 224,
    "train.eval_batch_size": 500,
    "train.lr": 1e-4,
    "train.coef_lr": 1e-3,
    "train.betas": (0.9, 0.98),
    "train.weight_decay": 0.2,
    "train.warmup_proportion": 0.1,
    "train.grad_clip": 1.0,
    "train.init_tau": 5.0,
    "train.min_tau": 0.5,
    "train.tau_decay": 0.045,
    "train.k_warmup_epochs": 0,
}
# The README's three training commands (3 GPUs x batch 32) and SPEC section 7's frame counts.
COMMANDS = {
    "msrvtt": {"model.num_frames": 16, "model.top_k": 12, "train.epochs": 30, "data.caption_mode": "random"},
    "didemo": {"model.num_frames": 32, "model.top_k": 16, "train.epochs": 5, "data.caption_mode": "concat"},
    "activitynet": {
        "model.num_frames": 64,
        "model.top_k": 32,
        "train.epochs": 30,
        "data.caption_mode": "concat",
    },
}
EVERY_COMMAND = {
    "model.selector.freeze_backbone": True,  # --freeze_cnn
    "model.aggregation": "mlp",  # --frame_agg mlp
    "model.selection": "learned",
    "train.num_workers": 3,  # --nproc_per_node=3
    "train.batch_size": 96,
    "train.use_gpu": True,
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_adaclip_commands_map_one_to_one(name):
    cfg = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    for key, value in {**REFERENCE_DEFAULTS, **EVERY_COMMAND, **COMMANDS[name]}.items():
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value, key


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
