"""The export stage's ONNX files: other runtimes' opset, PyTorch's outputs, int8 at a measured cost, the deployment
table."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.data import load_folds, load_prepared
from pipeline.errors import ConfigError, PipelineError
from pipeline.graphs.ensemble_net import EnsembleNet, bundle_opset, export_onnx, load_member
from pipeline.graphs.quantize import quantize_int8
from pipeline.runtime.bundle_format import BundleInfo, Member
from pipeline.runtime.classifier import Classifier
from tests.conftest import E2E_MEMBERS, E2E_PARAMS, run_pipeline, tiny_params

INT8_ACCURACY_BOUND = 0.03  # int8 may cost at most 3 points of OOF accuracy on the synthetic competition


def exported(root):
    return json.loads((root / "metrics" / "export.json").read_text())


def test_every_fold_model_and_the_ensemble_are_exported_fp32_and_int8_at_the_configured_opset(e2e_project):
    root, _, _ = e2e_project
    folds = E2E_PARAMS["folds"]["ids"]
    stems = [f"{name}/fold{fold}" for name in E2E_MEMBERS for fold in folds] + ["ensemble"]
    for stem in stems:
        for suffix in (".onnx", ".int8.onnx"):
            graph = onnx.load(str(root / "export" / f"{stem}{suffix}"))
            assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {
                E2E_PARAMS["export"]["opset"]
            }
            assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        int8 = onnx.load(str(root / "export" / f"{stem}.int8.onnx"))
        assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
        assert (root / "export" / f"{stem}.int8.onnx").stat().st_size < 0.35 * (
            root / "export" / f"{stem}.onnx"
        ).stat().st_size


def test_onnxruntime_gives_pytorchs_probabilities_on_train_images_at_any_batch_size(e2e_project):
    root, _, _ = e2e_project
    data = load_prepared(root / "data" / "prepared")
    member, models = load_member(root / "models", "resnet10t", 1.0, (1,), data, ({}, {"hflip": True}))
    info = BundleInfo(data.classes, 48, 1, data.pixel_mean, data.pixel_std, (member,))
    faces = np.asarray(data.train_images[:7]).reshape(7, 48, 48, 1)
    with torch.no_grad():
        expected = EnsembleNet(info, [models])(torch.from_numpy(faces.astype(np.float32))).numpy()
    graph = Classifier(root / "export" / "resnet10t" / "fold1.onnx")
    assert np.abs(graph.probabilities(faces) - expected).max() < 1e-4
    assert np.abs(graph.probabilities(faces[:1]) - expected[:1]).max() < 1e-4
    assert max(exported(root)["max_difference"].values()) <= E2E_PARAMS["export"]["max_difference"]


def test_deployment_table_measures_every_graph_and_int8_costs_little_accuracy(e2e_project):
    root, _, _ = e2e_project
    rows = pd.DataFrame(exported(root)["rows"])
    assert sorted(rows["model"].unique()) == sorted([*E2E_MEMBERS, "ensemble"])
    assert set(rows["precision"]) == {"fp32", "int8"}
    threads = [str(t) for t in E2E_PARAMS["export"]["latency_threads"]]
    assert all(sorted(latency) == sorted(threads) and min(latency.values()) > 0 for latency in rows["latency_ms"])
    table = rows.set_index(["model", "precision"])
    for model in rows["model"].unique():
        assert (
            table.loc[(model, "fp32"), "oof_accuracy"] - table.loc[(model, "int8"), "oof_accuracy"]
            <= INT8_ACCURACY_BOUND
        )
        assert table.loc[(model, "int8"), "size_mb"] < table.loc[(model, "fp32"), "size_mb"]
    # Each backbone's fp32 graphs, fold by fold on their held-out images, are its OOF predictions.
    for name in E2E_MEMBERS:
        oof_accuracy = json.loads((root / "metrics" / f"{name}.json").read_text())["accuracy"]
        assert abs(table.loc[(name, "fp32"), "oof_accuracy"] - oof_accuracy) < 0.005
    assert "| ensemble | int8 |" in (root / "export" / "deployment.md").read_text()
    report = (root / "report" / "report.md").read_text()
    assert "## Deployment" in report and "| ensemble | int8 | ensemble.int8.onnx |" in report


def test_predict_runs_an_int8_export_and_agrees_with_the_bundle(e2e_project, tmp_path):
    root, _, _ = e2e_project
    test_images = root / "data" / "synthetic" / "competition" / "test"
    for model, out in ((root / "bundle", "bundle.csv"), (root / "export" / "ensemble.int8.onnx", "int8.csv")):
        done = run_pipeline("predict", str(test_images), "--faces", "--model", str(model), "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    bundle, int8 = pd.read_csv(tmp_path / "bundle.csv"), pd.read_csv(tmp_path / "int8.csv")
    assert list(bundle.columns) == list(int8.columns) and len(bundle) == len(int8)
    assert (bundle["label"] == int8["label"]).mean() >= 0.9


def test_int8_calibration_never_sees_the_held_out_fold(e2e_project):
    from pipeline.stages.export import calibration_rows

    root, _, _ = e2e_project
    data = load_prepared(root / "data" / "prepared")
    fold_of = load_folds(root / "folds" / "folds.csv", data.train_ids)
    rows = calibration_rows(np.flatnonzero(fold_of != 0), 64, seed=0)
    assert len(rows) == 64 and not (fold_of[rows] == 0).any()


def test_zoomed_views_need_the_opset_that_writes_affine_grids(tmp_path):
    member = Member("tiny", "tiny", 1.0, (0,), None, ({}, {"scale": 1.1}))
    info = BundleInfo(["a", "b"], 8, 1, 0.5, 0.25, (member,))
    net = EnsembleNet(info, [[torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))]])
    with pytest.raises(PipelineError, match="set export.opset: 20"):
        export_onnx(net, tmp_path / "tiny.onnx", opset=13)
    export_onnx(net, tmp_path / "tiny.onnx", opset=bundle_opset(info))
    assert Classifier(tmp_path / "tiny.onnx").probabilities(np.zeros((3, 8, 8), np.uint8)).shape == (3, 2)


@pytest.mark.parametrize(
    "views",
    [
        ({}, {"crop": 6, "shift": [-1, 1], "hflip": True}, {"crop": 6, "shift": [1, -1]}),
        ({}, {"hflip": True}, {"shift": [-2, 1], "hflip": True}, {"shift": [3, -3]}),
    ],
)
def test_crop_and_whole_pixel_shift_views_export_at_opset_13_and_onnxruntime_computes_what_pytorch_does(
    tmp_path, views
):
    info = BundleInfo(["a", "b"], 8, 1, 0.5, 0.25, (Member("tiny", "tiny", 1.0, (0,), None, views),))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(2, 2),
    )
    net = EnsembleNet(info, [[model.eval()]])
    export_onnx(net, tmp_path / "tiny.onnx", opset=13)
    faces = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1), np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(faces))
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert np.allclose(Classifier(tmp_path / "tiny.onnx").probabilities(faces), expected.numpy(), atol=1e-5)
    quantize_int8(
        tmp_path / "tiny.onnx", tmp_path / "tiny.int8.onnx", faces
    )  # the int8 graph the export stage writes beside it
    # Its outputs are int8 too (steps of about 1/255), so it is compared at that resolution.
    assert np.allclose(Classifier(tmp_path / "tiny.int8.onnx").probabilities(faces), expected.numpy(), atol=0.01)


def test_the_fast_graph_scores_a_crop_trained_member_on_its_centre_window():
    member = Member("tiny", "tiny", 1.0, (0,), None, ({"crop": 6, "shift": [1, 1]},), plain_view={"crop": 6})
    info = BundleInfo(["a", "b"], 8, 1, 0.5, 0.25, (member,), fast=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2))  # reads 6×6 windows only
    faces = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1), np.uint8))
    with torch.no_grad():
        centre = (faces.permute(0, 3, 1, 2).float() - 0.5 * 255) / (0.25 * 255)
        expected = torch.softmax(model(centre[..., 1:7, 1:7]), dim=1)
        assert torch.allclose(EnsembleNet(info, [[model]])(faces), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("opset", 10, "between 11 and 20"), ("latency_threads", [], "thread counts"), ("max_difference", 0, "above 0")],
)
def test_export_settings_are_checked_at_load_time(key, value, message):
    params = tiny_params()
    params["export"] = {**params["export"], key: value}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(params)


def test_the_export_carries_valence_and_arousal_and_int8_keeps_them(e2e_project):
    root, _, _ = e2e_project
    for name in ("ensemble.onnx", "ensemble.int8.onnx"):
        graph = onnx.load(str(root / "export" / name))
        assert [o.name for o in graph.graph.output] == ["probabilities", "targets"]
    classifier = Classifier(root / "export" / "ensemble.int8.onnx")
    assert classifier.targets == ["valence", "arousal"]
    faces = np.load(root / "data" / "prepared" / "test_images.npy")[:5]
    values = classifier.outputs(faces)[:, len(classifier.classes) :]
    assert values.shape == (5, 2) and np.abs(values).max() <= 1
    table = pd.DataFrame(exported(root)["rows"]).set_index(["model", "precision"])
    for model in [*E2E_MEMBERS, "ensemble"]:
        fp32, int8 = table.loc[(model, "fp32"), "oof_ccc"], table.loc[(model, "int8"), "oof_ccc"]
        assert sorted(fp32) == ["arousal", "valence"]
        assert all(fp32[name] - int8[name] <= 0.05 for name in fp32)
    # A backbone's fp32 graphs, fold by fold, give the values of its OOF table.
    for name in E2E_MEMBERS:
        scores = json.loads((root / "metrics" / f"{name}.json").read_text())["targets"]
        assert all(
            abs(table.loc[(name, "fp32"), "oof_ccc"][target] - scores[target]["ccc"]) < 0.01 for target in scores
        )
