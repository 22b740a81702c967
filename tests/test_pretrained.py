"""Pretrained starting weights from the Hugging Face cache, offline: a cache made here stands for what one
download on a connected machine leaves."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.commands import weights as weights_command
from pipeline.data import load_prepared
from pipeline.errors import PipelineError
from pipeline.training.fold_run import fold_checkpoint
from pipeline.training.models import create_model
from pipeline.training.pretrained import hub_id, resolve
from tests.conftest import train_config
from tests.hub_cache import fabricate


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache, the hub unreachable (HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def imagenet_resnet10t() -> torch.nn.Module:
    torch.manual_seed(5)
    return timm.create_model("resnet10t", pretrained=False)  # 3 channels, 1000 classes, as published


def test_pretrained_true_loads_timms_default_weights_from_the_cache_adapted_to_the_data(offline_cache):
    source = imagenet_resnet10t()
    repo = hub_id("resnet10t")
    commit = fabricate(offline_cache, repo, source.state_dict())
    config = train_config(model="resnet10t", pretrained=True)
    model = create_model(config, in_chans=1, num_classes=7)
    loaded, published = model.state_dict(), source.state_dict()
    assert all(
        torch.equal(loaded[name], published[name]) for name in published if not name.startswith(("conv1.0", "fc"))
    )
    # The 3-channel stem summed into one channel; a new 7-class head.
    assert torch.allclose(loaded["conv1.0.weight"], published["conv1.0.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    assert loaded["fc.weight"].shape == (7, published["fc.weight"].shape[1])
    assert resolve(config).identity == f"{repo}@{commit}"


def test_a_hub_id_loads_that_repositorys_weights(offline_cache):
    source = imagenet_resnet10t()
    fabricate(offline_cache, "timm/resnet10t.tv_in1k", source.state_dict())
    model = create_model(train_config(model="resnet10t", pretrained="timm/resnet10t.tv_in1k"), 3, 1000)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in source.state_dict().items())


def test_weights_not_cached_offline_are_one_line_naming_the_id_the_cache_and_the_command(offline_cache, capsys):
    with pytest.raises(PipelineError) as raised:
        create_model(train_config(model="resnet10t", pretrained=True), 1, 7)
    message = str(raised.value)
    assert "\n" not in message and "timm/resnet10t.c3_in1k" in message and str(offline_cache) in message
    assert "python -m pipeline weights timm/resnet10t.c3_in1k" in message
    fabricate(offline_cache, "timm/resnet10t.c3_in1k", imagenet_resnet10t().state_dict())
    assert weights_command.main(["resnet10t"]) == 0
    assert "timm/resnet10t.c3_in1k@" in capsys.readouterr().out


def test_a_model_without_hub_weights_is_refused_naming_the_other_choices():
    with pytest.raises(Exception, match="timm has no hub weights for 'face_vgg'"):
        resolve(train_config(model="face_vgg", pretrained=True, drop_path_rate=None))


def test_the_resume_key_follows_the_weights_not_their_path(prepared, tmp_path):
    """A weight file replaced at the same path starts a run afresh rather than resuming one from the old weights."""
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 2
    path = tmp_path / "start.safetensors"
    save_file(imagenet_resnet10t().state_dict(), str(path))
    config = train_config(model="resnet10t", pretrained=str(path))
    first = fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config).key
    assert fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config).key == first
    torch.manual_seed(6)
    save_file(timm.create_model("resnet10t").state_dict(), str(path))
    assert fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config).key != first
