"""The small-face backbones: built by name through timm, trained and exported like any timm model."""

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.errors import ConfigError
from pipeline.training.face_nets import default_cfgs
from pipeline.training.models import create_model
from tests.conftest import train_config

FACE_NETS = sorted(default_cfgs)
CPU_SIZED = [name for name in FACE_NETS if name not in ("face_resnet18", "face_vgg_wide")]


@pytest.mark.parametrize("name", FACE_NETS)
def test_every_face_net_is_in_the_timm_registry(name):
    assert name in timm.list_models("face_*")
    model = timm.create_model(name, in_chans=3, num_classes=9)
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 9)


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_SIZED)
def test_the_pipeline_builds_them_from_params_and_they_learn(name):
    torch.manual_seed(0)
    model = create_model(train_config(model=name, drop_path_rate=None), in_chans=1, num_classes=2)
    x = torch.randn(16, 1, 48, 48)
    y = (x[:, 0, :24].mean((1, 2)) > x[:, 0, 24:].mean((1, 2))).long()  # upper half brighter: a learnable rule
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_the_face_resnet_keeps_resolution_that_the_imagenet_stem_loses():
    face = timm.create_model("face_resnet10", in_chans=1, num_classes=7)
    imagenet = timm.create_model("resnet10t", in_chans=1, num_classes=7)
    x = torch.zeros(1, 1, 48, 48)
    assert face.forward_features(x).shape[-1] == 6  # 48 / 8: stride-1 stem, no max-pool
    assert imagenet.forward_features(x).shape[-1] == 2  # 48 / 32
    assert timm.create_model("face_resnet10_s2", in_chans=1).forward_features(x).shape[-1] == 3


def test_drop_path_on_a_net_without_residual_branches_is_refused_by_name():
    with pytest.raises(ConfigError, match="face_vgg.*no residual branches"):
        create_model(train_config(model="face_vgg", drop_path_rate=0.1), in_chans=1, num_classes=7)


def test_residual_face_net_takes_drop_path():
    model = create_model(train_config(model="face_resnet10", drop_path_rate=0.1), in_chans=1, num_classes=7)
    assert model.layer4[0].drop_path.drop_prob == pytest.approx(0.1)


def test_pretrained_file_is_adapted_to_channels_and_classes(tmp_path):
    source = timm.create_model(
        "face_xception", in_chans=3, num_classes=7
    )  # the registry's class count: a 7-emotion model
    path = tmp_path / "face_xception.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model(
        train_config(model="face_xception", drop_path_rate=None, pretrained=str(path)), in_chans=1, num_classes=9
    )
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 9)  # 7 classes + valence, arousal: a new head
    assert torch.equal(model.stages[0].shortcut[1].conv.weight, source.stages[0].shortcut[1].conv.weight)


@pytest.mark.parametrize("name", ["face_resnet10", "face_vgg", "face_xception"])
def test_onnx_runtime_computes_what_pytorch_does(tmp_path, name):
    model = timm.create_model(name, in_chans=1, num_classes=7).eval()
    x = torch.randn(3, 1, 48, 48)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=13,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)
