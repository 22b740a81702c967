import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.errors import ConfigError
from pipeline.training.models import autocast, create_model, load_weights, save_weights
from tests.conftest import train_config


def test_unknown_timm_name_is_named_with_suggestions():
    with pytest.raises(ConfigError, match="unknown timm model 'resnet_nope'"):
        create_model(train_config(model="resnet_nope"), in_chans=1, num_classes=7)


def test_model_has_the_requested_channels_and_classes():
    model = create_model(train_config(model="resnet10t"), in_chans=1, num_classes=5)
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 5)


def test_pretrained_from_a_local_file_is_adapted_to_channels_and_classes(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, in_chans=3, num_classes=1000)
    path = tmp_path / "imagenet_resnet10t.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model(train_config(model="resnet10t", pretrained=str(path)), in_chans=1, num_classes=7)
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)
    # Non-stem, non-head weights come from the file.
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_a_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        create_model(train_config(model="resnet10t", pretrained=str(tmp_path / "none.pth")), 1, 7)


def test_weights_round_trip_with_their_metadata(tmp_path):
    model = create_model(train_config(model="resnet10t"), 1, 3)
    save_weights(model, tmp_path / "m.safetensors", {"fold": 2, "config": {"lr": 0.1}})
    other = load_weights(create_model(train_config(model="resnet10t"), 1, 3), tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as handle:
        assert json.loads(handle.metadata()["config"]) == {"lr": 0.1}


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        autocast(torch.device("cpu"), "fp16")


def test_unresolved_auto_precision_never_reaches_autocast():
    with pytest.raises(
        ConfigError, match="precision 'auto' reached autocast unresolved: use the settings the model trained with"
    ):
        autocast(torch.device("cpu"), "auto")
