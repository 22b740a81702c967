"""The trained ensemble outside the pipeline: the bundle `dvc repro` writes, used by `predict` in a
fresh process, in a folder with no params.yaml and no workspace."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.data import load_folds, load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.predictions import read_oof_table
from pipeline.runtime.classifier import Classifier
from pipeline.stages.bundle import decided_rows, label_agreement
from tests.conftest import E2E_PARAMS, PROJECT, run_pipeline


def test_a_copied_onnx_file_alone_gives_the_submissions_probabilities(e2e_project, tmp_path):
    root, _, _ = e2e_project
    shutil.copy(root / "bundle" / "ensemble.onnx", tmp_path / "emotions.onnx")
    test_images = root / "data" / "synthetic" / "competition" / "test"
    done = run_pipeline(
        "predict", str(test_images), "--faces", "--model", "emotions.onnx", "--out", "out.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "params.yaml").exists()
    got = pd.read_csv(tmp_path / "out.csv")
    got["id"] = got["file"].map(lambda f: f.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    expected = pd.read_csv(root / "ensemble" / "test.csv", dtype={"id": str}).set_index("id")
    classes = json.loads((root / "data" / "prepared" / "classes.json").read_text())
    got = got.set_index("id").loc[expected.index]
    assert np.abs(got[classes].to_numpy() - expected[classes].to_numpy()).max() < 1e-4
    decided = decided_rows(expected[classes].to_numpy())
    labels = np.array(classes)[expected[classes].to_numpy().argmax(1)]
    assert decided.mean() > 0.9 and (got["label"].to_numpy()[decided] == labels[decided]).all()


def test_the_bundle_check_sets_near_ties_apart_and_counts_every_other_flip():
    """An undertrained ensemble's near-uniform rows flip with rounding; a flip on a decided row is a real fault."""
    expected = np.array([[0.7, 0.2, 0.1], [0.3335, 0.333, 0.3335 - 1e-4], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]])
    got = expected.copy()
    got[1] = [0.3330, 0.3340, 0.3330]  # the tie in row 1 goes the other way
    assert label_agreement(got, expected) == (1.0, 1)
    got[2] = [0.1, 0.4, 0.5]  # a decided row flips
    assert label_agreement(got, expected) == (pytest.approx(2 / 3), 1)
    assert label_agreement(np.full((2, 3), 1 / 3), np.full((2, 3), 1 / 3)) == (1.0, 2)


def test_bundle_says_what_it_holds_and_checked_itself(e2e_project):
    root, _, _ = e2e_project
    described = json.loads((root / "bundle" / "bundle.json").read_text())
    weights = json.loads((root / "ensemble" / "weights.json").read_text())["weights"]
    assert {m["name"]: m["weight"] for m in described["members"]} == {n: w for n, w in weights.items() if w > 0}
    assert described["check"]["test_label_agreement"] == 1.0
    assert described["classes"] == json.loads((root / "data" / "prepared" / "classes.json").read_text())
    full, fast = Classifier(root / "bundle"), Classifier(root / "bundle", fast=True)
    assert not full.info.fast and fast.info.fast and fast.path.name == "fast.onnx"
    faces = np.load(root / "data" / "prepared" / "test_images.npy")[:16]
    p_full, p_fast = full.probabilities(faces), fast.probabilities(faces)
    assert p_full.shape == p_fast.shape == (16, len(described["classes"]))
    assert np.allclose(p_full.sum(1), 1, atol=1e-5) and not np.allclose(p_full, p_fast)


def test_the_fast_graph_is_whichever_scores_higher_alone_the_members_first_folds_or_a_student(e2e_project):
    """fast.onnx holds the candidate with the best fast OOF accuracy, and on its first fold's held-out faces gives
    exactly the no-TTA OOF rows that figure was computed from."""
    root, _, _ = e2e_project
    provenance = json.loads((root / "bundle" / "bundle.json").read_text())["provenance"]
    candidates = provenance["oof_accuracy_fast_candidates"]
    assert set(candidates) == {"members", *E2E_PARAMS["distill"]["students"]}
    best = max(candidates, key=lambda name: (candidates[name], name == "members"))
    fast = Classifier(root / "bundle", fast=True)
    kept = [name for name, w in json.loads((root / "ensemble" / "weights.json").read_text())["weights"].items() if w]
    assert [m.name for m in fast.info.members] == provenance["fast"] == (kept if best == "members" else [best])
    assert provenance["oof_accuracy_fast"] == candidates[best]
    data = load_prepared(root / "data" / "prepared")
    first = np.flatnonzero(load_folds(root / "folds" / "folds.csv", data.train_ids) == E2E_PARAMS["folds"]["ids"][0])
    expected = sum(
        m.weight * read_oof_table(root / "oof" / f"{m.name}.no_tta.csv", data.classes, data.train_ids)[0][first]
        for m in fast.info.members
    )
    assert np.abs(fast.probabilities(np.asarray(data.train_images[first])) - expected).max() < 1e-4


def test_missing_bundle_names_the_stage_that_writes_it(tmp_path):
    with pytest.raises(PipelineError, match="dvc repro bundle"):
        Classifier(tmp_path / "bundle")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(PipelineError, match="empty.onnx: onnxruntime cannot load it"):
        Classifier(tmp_path / "empty.onnx")
    done = run_pipeline("predict", str(PROJECT / "README.md"), "--model", "nothing_here", cwd=tmp_path)
    assert done.returncode == 1 and "no model bundle at nothing_here; run `dvc repro bundle`" in done.stderr
