"""load_clip: the project's tiny config, local checkpoints (open_clip's and ours), clear config errors."""

import open_clip
import pytest
import torch

from adaclip.config import ClipConfig, ModelConfig
from adaclip.errors import ConfigError
from adaclip.models import AdaCLIP, load_clip, load_tokenizer


def test_tiny_config_is_a_registered_open_clip_model():
    bundle = load_clip(ClipConfig(name="adaclip-tiny"))
    assert "adaclip-tiny" in open_clip.list_models()
    assert (bundle.image_size, bundle.embed_dim, bundle.context_length) == (32, 64, 32)
    assert bundle.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert bundle.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    tokens = bundle.tokenizer(["a dog"])
    assert tokens.shape == (1, 32) and tokens.dtype == torch.long
    image = torch.zeros(2, 3, 32, 32)
    assert bundle.model.encode_image(image).shape == (2, 64)


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown CLIP model 'ViT-Nope'"):
        load_clip(ClipConfig(name="ViT-Nope"))


def test_missing_checkpoint_file_is_a_config_error(tmp_path):
    missing = tmp_path / "weights.pt"
    with pytest.raises(ConfigError, match="does not exist"):
        load_clip(ClipConfig(name="adaclip-tiny", pretrained=str(missing)))


def test_unknown_tag_is_a_config_error():
    with pytest.raises(ConfigError, match="neither an existing file nor a tag"):
        load_clip(ClipConfig(name="adaclip-tiny", pretrained="openai"))


def test_open_clip_state_dict_loads_back(tmp_path):
    torch.manual_seed(3)
    original = load_clip(ClipConfig(name="adaclip-tiny")).model
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in original.state_dict().items()}}, path)
    loaded = load_clip(ClipConfig(name="adaclip-tiny", pretrained=str(path))).model
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_training_checkpoint_clip_weights_load_back(tmp_path):
    torch.manual_seed(4)
    cfg = ModelConfig(clip=ClipConfig(name="adaclip-tiny"), num_frames=8, top_k=4)
    trained = AdaCLIP.from_config(cfg)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)
    bundle = load_clip(ClipConfig(name="adaclip-tiny", pretrained=str(path)))
    for (name, a), (_, b) in zip(
        trained.clip.state_dict().items(), bundle.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    state = load_clip(ClipConfig(name="adaclip-tiny")).model.state_dict()
    state.pop("visual.conv1.weight")
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="does not match"):
        load_clip(ClipConfig(name="adaclip-tiny", pretrained=str(path)))


def test_tokenizer_alone_for_data_workers():
    tokenizer = load_tokenizer(ClipConfig(name="adaclip-tiny"), context_length=16)
    bundle = load_clip(ClipConfig(name="adaclip-tiny"))
    tokens = tokenizer(["a dog runs"])
    assert tokens.shape == (1, 16)
    assert torch.equal(tokens, bundle.tokenizer(["a dog runs"], context_length=16))
    with pytest.raises(ConfigError, match="unknown CLIP model"):
        load_tokenizer(ClipConfig(name="nope"))
