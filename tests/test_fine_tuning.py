"""Fine-tuning from another run's weights: a classifier of another size replaced, the backbone frozen for the
first epochs, a lower lr for the early layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import ConfigError
from pipeline.training.augment import Normalizer
from pipeline.training.loop import Split, fit
from pipeline.training.models import create_model
from pipeline.training.step import TrainStep, seed_everything
from tests.conftest import train_config
from tests.test_training import bars_dataset

CONFIG = train_config(
    model="face_resnet10",
    epochs=2,
    batch_size=16,
    lr=0.003,
    warmup_epochs=0,
    workers=0,
    augment=(),
    drop_path_rate=None,
)
NORMALIZE = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)


def another_runs_weights(path, outputs: int) -> dict[str, torch.Tensor]:
    """A fold model of another competition: `outputs` class and target rows in its classifier (safetensors, or a
    PyTorch state dict for a .pth path)."""
    torch.manual_seed(3)
    state = create_model(CONFIG, in_chans=1, num_classes=outputs).state_dict()
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("outputs, classes, file", [(9, 7, "model.safetensors"), (2, 2, "model.pth")])
def test_another_runs_model_starts_the_backbone_with_a_classifier_only_where_its_size_fits(
    tmp_path, outputs, classes, file
):
    """A model of 7 classes and 2 targets starts a 7-class one (a new classifier, whatever the model's published
    class count); one of 2 outputs keeps its classifier for 2 classes."""
    path = tmp_path / file
    saved = another_runs_weights(path, outputs)
    config = dataclasses.replace(CONFIG, pretrained=str(path))
    loaded = create_model(config, in_chans=1, num_classes=classes).state_dict()
    backbone = [name for name in saved if not name.startswith("fc.")]
    assert all(torch.equal(loaded[name], saved[name]) for name in backbone)
    assert loaded["fc.weight"].shape == (classes, saved["fc.weight"].shape[1])
    assert torch.equal(loaded["fc.weight"], saved["fc.weight"]) == (outputs == classes)


def test_freeze_epochs_train_the_classifier_alone_then_everything(tmp_path):
    path = tmp_path / "model.safetensors"
    saved = another_runs_weights(path, 9)
    images, labels = bars_dataset(96, np.random.default_rng(0))
    train = Split(images, labels)

    def trained(epochs: int) -> dict[str, torch.Tensor]:
        config = dataclasses.replace(CONFIG, pretrained=str(path), freeze_epochs=1, epochs=epochs)
        seed_everything(0)
        model = create_model(config, 1, 2)
        return fit(model, train, train, config, NORMALIZE, 2).model.state_dict()

    convolutions = [name for name in saved if name.endswith("conv1.weight") or name.endswith("conv2.weight")]
    after_one, after_two = trained(1), trained(2)
    assert all(torch.equal(after_one[name], saved[name]) for name in convolutions)
    assert not torch.equal(after_one["fc.weight"], after_two["fc.weight"])
    assert not any(torch.equal(after_two[name], saved[name]) for name in convolutions)


def test_layer_decay_gives_the_stem_the_smallest_lr_and_the_classifier_the_full_one():
    config = dataclasses.replace(CONFIG, layer_decay=0.5)
    model = create_model(config, 1, 2)
    step = TrainStep(model, config, NORMALIZE, num_classes=2, steps_per_epoch=4)
    scale_of = {id(weight): group["lr_scale"] for group in step.optimizer.param_groups for weight in group["params"]}
    stem, head = model.conv1.weight, model.fc.weight
    assert scale_of[id(head)] == 1.0
    assert scale_of[id(stem)] == min(scale_of.values()) <= 0.5**3
    assert sorted(set(scale_of.values())) == [0.5**n for n in range(len(set(scale_of.values())) - 1, -1, -1)]


def test_freezing_a_backbone_without_pretrained_weights_is_refused():
    with pytest.raises(ConfigError, match="freeze_epochs=2 .* pretrained: false"):
        dataclasses.replace(CONFIG, freeze_epochs=2).validate("train")
