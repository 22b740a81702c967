"""Fine-tuning from another run's weights: a classifier of another size replaced, the backbone frozen for the
first epochs, a lower lr for the early layers, and pixels normalised as the pretrained weights expect."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.config import ConfigError
from pipeline.data import Split
from pipeline.graphs.ensemble_net import EnsembleNet, bundle_opset, export_onnx
from pipeline.runtime.bundle_format import BundleInfo, Member
from pipeline.runtime.classifier import Classifier
from pipeline.training.augment import Normalizer
from pipeline.training.loop import fit
from pipeline.training.models import create_model
from pipeline.training.pretrained import input_statistics
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


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's config for resnet18's weights


def test_normalize_pretrained_reads_the_weights_own_statistics_and_data_reads_the_datas():
    imagenet = train_config(model="resnet18", pretrained=True, normalize="pretrained")
    rgb = input_statistics(imagenet, 0.4, 0.2, channels=3)
    assert (rgb.mean, rgb.std, rgb.interpolation) == (IMAGENET_MEAN, IMAGENET_STD, "bicubic")
    gray = input_statistics(imagenet, 0.4, 0.2, channels=1)  # timm sums the colour filters of the stem into one
    assert gray.mean == pytest.approx((np.mean(IMAGENET_MEAN),)) and gray.std == pytest.approx((np.mean(IMAGENET_STD),))
    tagged = dataclasses.replace(imagenet, pretrained="timm/resnet18.fb_swsl_ig1b_ft_in1k")
    assert input_statistics(tagged, 0.4, 0.2, channels=3).interpolation == "bilinear"  # that tag's own
    data = input_statistics(dataclasses.replace(imagenet, normalize="data"), 0.4, 0.2, channels=3)
    assert (data.mean, data.std, data.interpolation) == ((0.4,), (0.2,), "bilinear")
    prepared = SimpleNamespace(pixel_mean=0.4, pixel_std=0.2, channels=3)  # what training's Normalizer reads
    trained = Normalizer.of_model(imagenet, prepared, torch.device("cpu"))
    assert (trained.mean, trained.std, trained.interpolation) == (IMAGENET_MEAN, IMAGENET_STD, "bicubic")


def test_normalize_pretrained_is_refused_without_statistics_to_read(tmp_path):
    with pytest.raises(ConfigError, match="pretrained is false"):
        train_config(normalize="pretrained").validate("train")
    weights = tmp_path / "fold0.safetensors"
    another_runs_weights(weights, 7)
    with pytest.raises(ConfigError, match="is a file, which carries none"):
        input_statistics(train_config(pretrained=str(weights), normalize="pretrained"), 0.4, 0.2, 1)


def test_a_model_with_its_own_statistics_trains_and_is_blended_as_it_reads_pixels(tmp_path):
    """Per channel mean/std and bicubic resizing in training's Normalizer, in the bundle's graph beside a member
    normalised by the data's statistics, and in onnxruntime running that graph."""
    torch.manual_seed(0)
    faces = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), np.uint8))
    pixels = faces.permute(0, 3, 1, 2).float()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    by_hand = F.interpolate((pixels / 255 - mean) / std, size=(12, 12), mode="bicubic", align_corners=False)
    normalized = Normalizer(IMAGENET_MEAN, IMAGENET_STD, 12, torch.device("cpu"), False, "bicubic")(faces)
    assert torch.allclose(normalized, by_hand, atol=1e-5)

    def tiny_model(side: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * side * side, 2)).eval()

    own, plain = tiny_model(12), tiny_model(8)
    members = (
        Member("own", "tiny", 0.5, (0,), 12, ({},), {}, IMAGENET_MEAN, IMAGENET_STD, "bicubic"),
        Member("plain", "tiny", 0.5, (0,), None, ({},)),  # None: the data's statistics (bundles written before)
    )
    info = BundleInfo(["a", "b"], 8, 3, 0.5, 0.25, members)
    net = EnsembleNet(info, [[own], [plain]])
    with torch.no_grad():
        expected = 0.5 * torch.softmax(own(by_hand), 1) + 0.5 * torch.softmax(plain((pixels / 255 - 0.5) / 0.25), 1)
        assert torch.allclose(net(faces), expected, atol=1e-5)
    export_onnx(net, tmp_path / "tiny.onnx", opset=bundle_opset(info))
    runtime = Classifier(tmp_path / "tiny.onnx")
    assert runtime.info.members[0].pixel_mean == IMAGENET_MEAN
    assert np.allclose(runtime.probabilities(faces.numpy()), expected.numpy(), atol=1e-4)
