"""The real `dvc repro` on a tiny synthetic competition, in a fresh project folder."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.conftest import ALWAYS_RUN, E2E_MEMBERS, E2E_PARAMS, PROJECT, copy_project, repro, stages_run
from tests.imports import closure

DVC_STAGES = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


@pytest.fixture
def project(e2e_project):
    """The shared project, to read: a test that changes files works in `project_copy`."""
    return e2e_project


@pytest.fixture
def project_copy(e2e_project, tmp_path):
    """A private copy of the e2e project (its DVC cache and stage outputs included) that a test may change."""
    root, env, output = e2e_project
    return copy_project(root, tmp_path / "project"), env, output


def test_every_stage_runs_and_writes_its_outputs(project):
    root, _, output = project
    names = E2E_MEMBERS
    assert stages_run(output) == expanded_stages()
    for name in names:
        for fold in E2E_PARAMS["folds"]["ids"]:
            run = root / "models" / name / f"fold{fold}"
            assert {p.name for p in run.iterdir()} == {"model.safetensors", "oof_plain.csv", "history.csv", "run.json"}
        by_fold = pd.read_csv(root / "test_predictions" / f"{name}.folds.csv")
        assert sorted(set(by_fold["fold"])) == E2E_PARAMS["folds"]["ids"]
        oof = pd.read_csv(root / "oof" / f"{name}.csv")
        assert {"id", "fold", "label", "pred"} <= set(oof.columns)
        assert (root / "metrics" / f"{name}.json").exists()
        assert (root / "submissions" / f"{name}.csv").exists()
    assert (root / "ensemble" / "weights.json").exists() and (root / "ensemble" / "oof.csv").exists()


def test_folds_cover_train_once_keep_duplicates_together_and_balance_classes(project):
    root, _, _ = project
    folds = pd.read_csv(root / "folds" / "folds.csv", dtype={"id": str})
    train = pd.read_csv(root / "data" / "prepared" / "train.csv", dtype=str)
    images = np.load(root / "data" / "prepared" / "train_images.npy")
    assert sorted(folds["id"]) == sorted(train["id"]) and folds["id"].is_unique
    assert set(folds["fold"]) == set(E2E_PARAMS["folds"]["ids"])
    merged = train.merge(folds, on="id")
    merged["pixels"] = [im.tobytes() for im in images]
    repeated = merged[merged["pixels"].duplicated(keep=False)]
    assert len(repeated) > 0 and (repeated.groupby("pixels")["fold"].nunique() == 1).all()
    per_class = merged.groupby(["label", "fold"]).size().unstack()
    assert ((per_class.max(axis=1) - per_class.min(axis=1)) <= 3).all()


def test_submissions_match_the_sample_and_the_ensemble_beats_chance(project):
    root, _, _ = project
    sample = pd.read_csv(root / "data" / "synthetic" / "competition" / "sample_submission.csv", dtype=str)
    answers = pd.read_csv(root / "data" / "synthetic" / "answers.csv", dtype=str).set_index("id")["label"]
    ensemble = pd.read_csv(root / "submissions" / "ensemble.csv", dtype=str)
    assert list(ensemble.columns) == list(sample.columns) and list(ensemble["id"]) == list(sample["id"])
    accuracy = (ensemble["label"].to_numpy() == answers.loc[ensemble["id"]].to_numpy()).mean()
    majority = answers.value_counts(normalize=True).max()
    assert accuracy > majority + 0.15, f"ensemble test accuracy {accuracy:.3f} vs majority class {majority:.3f}"


def dvc_json(root: Path, env: dict, *command: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *command, "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_report_dvc_metrics_and_plots_agree(project, tmp_path):
    root, env, _ = project
    report = json.loads((root / "metrics" / "report.json").read_text())
    shown = dvc_json(root, env, "metrics", "show")[""]["data"]
    for name in E2E_MEMBERS:
        oof = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert report[name]["accuracy"] == pytest.approx(oof["accuracy"])
        assert shown[f"metrics/{name}.json"]["data"]["accuracy"] == pytest.approx(oof["accuracy"])
    assert shown["metrics/report.json"]["data"]["ensemble"]["accuracy"] == pytest.approx(report["ensemble"]["accuracy"])
    tuned = json.loads((root / "tuning" / f"{list(E2E_PARAMS['backbones'])[0]}.json").read_text())
    assert not E2E_PARAMS["tune"]["enabled"] and not tuned["enabled"]  # the default; tests/test_tune.py runs studies
    plots = dvc_json(root, env, "plots", "show")
    assert not plots.get("errors")
    assert {"ensemble/oof.csv", "report/confident_errors.png"} <= set(plots["data"])
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "report",
            "--out",
            str(tmp_path / "report_again"),
            "--metrics",
            str(tmp_path / "report_again.json"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert printed.returncode == 0, printed.stderr
    # The project has a holdout, whose score is the figure (tests/test_holdout.py); the estimate from OOF and the
    # unlabelled test images is kept beside it.
    expected = report["expected_leaderboard"]["unlabelled_estimate"]
    assert expected["oof_accuracy"] == pytest.approx(report["ensemble"]["accuracy"])
    assert expected["accuracy"] == pytest.approx(expected["oof_accuracy"] + expected["fold_averaging_gain"])
    assert expected["ci_low"] < expected["accuracy"] < expected["ci_high"]
    assert f"the test images would say {expected['accuracy']:.4f}" in printed.stdout


def test_member_subsets_blend_as_the_ensemble_stage_does(project, tmp_path):
    """benchmarks/member_subsets.py: each member alone scores its own OOF accuracy, all of them the ensemble's blend,
    on OOF and on the holdout."""
    root, env, _ = project
    command = [sys.executable, str(PROJECT / "benchmarks" / "member_subsets.py"), "--workspace", str(root)]
    done = subprocess.run([*command, "--out", str(tmp_path / "subsets")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {tuple(row["members"]): row for row in json.loads((tmp_path / "subsets.json").read_text())["subsets"]}
    names = tuple(E2E_MEMBERS)  # the backbones and the student
    assert set(rows) == {subset for size in (1, 2, 3) for subset in itertools.combinations(names, size)}
    for name in names:
        assert rows[(name,)]["oof_acc"] == pytest.approx(
            json.loads((root / "metrics" / f"{name}.json").read_text())["accuracy"]
        )
    assert rows[names]["oof_acc"] == pytest.approx(
        json.loads((root / "metrics" / "ensemble.json").read_text())["blend_score"]
    )
    assert rows[names]["train_minutes"] == pytest.approx(sum(rows[(name,)]["train_minutes"] for name in names))
    assert " + ".join(names) in done.stdout
    judged = json.loads((root / "metrics" / "ensemble.json").read_text())["holdout"]  # the project has a holdout
    assert {name: rows[(name,)]["holdout_acc"] for name in names} == pytest.approx(judged["members"])
    assert rows[names]["holdout_acc"] == pytest.approx(judged["blend"])


def test_compare_runs_pairs_two_submissions_on_their_shared_holdout(project, tmp_path):
    """benchmarks/compare_runs.py: each run's submission scored on the holdout as the ensemble judged it, and the
    paired difference counted image by image (here a second run whose submission gets 3 of them wrong)."""
    root, env, _ = project
    other = tmp_path / "other"
    other.mkdir()
    for name in ("params.yaml", "data", "oof", "models", "test_predictions"):
        (other / name).symlink_to(root / name)
    (other / "ensemble").mkdir()
    rows = pd.read_csv(root / "ensemble" / "holdout.csv", dtype=str)
    classes = sorted(set(rows["label"]))
    spoilt = rows.index[rows["pred"] == rows["label"]][:3]
    rows.loc[spoilt, "pred"] = [
        classes[(classes.index(label) + 1) % len(classes)] for label in rows.loc[spoilt, "label"]
    ]
    rows.to_csv(other / "ensemble" / "holdout.csv", index=False)
    command = [sys.executable, str(PROJECT / "benchmarks" / "compare_runs.py"), str(root), str(other)]
    done = subprocess.run([*command, "--out", str(tmp_path / "ab")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "ab.json").read_text())
    judged = json.loads((root / "metrics" / "ensemble.json").read_text())["holdout"]
    assert figures["runs"][0]["holdout_acc"] == pytest.approx(judged["submitted"])
    paired = figures["b_minus_a"]
    assert paired["difference"] == pytest.approx(-3 / len(rows))
    assert (paired["only_a_right"], paired["only_b_right"]) == (3, 0)
    assert paired["mcnemar_p"] == pytest.approx(2 * 0.5**3)
    assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"] <= 0
    (other / "ensemble" / "holdout.csv").write_text(rows.iloc[1:].to_csv(index=False))
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "hold out different images" in refused.stderr


def test_tta_views_rescore_a_run_as_its_oof_and_ensemble_stages_did(project, tmp_path):
    """benchmarks/tta_views.py: the views params.yaml gives a backbone (those oof@ used) repeat its OOF accuracy
    and the ensemble's blend, the plain view its accuracy without TTA; a view the pipeline would refuse is refused
    by name."""
    root, env, _ = project
    name = list(E2E_PARAMS["backbones"])[0]
    views = tmp_path / "views.yaml"
    views.write_text("plain: [{}]\nshifted: [{}, {hflip: true}, {shift: [1, -1]}, {shift: [-1, 1], hflip: true}]\n")
    command = [
        sys.executable,
        str(PROJECT / "benchmarks" / "tta_views.py"),
        "--workspace",
        str(root),
        "--backbone",
        name,
        "--views",
        str(views),
    ]
    done = subprocess.run([*command, "--out", str(tmp_path / "views")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {row["views"]: row for row in json.loads((tmp_path / "views.json").read_text())["views"]}
    metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
    assert rows["params.yaml"]["oof_acc"] == pytest.approx(metrics["accuracy"])
    assert rows["plain"]["oof_acc"] == pytest.approx(metrics["accuracy_no_tta"])
    assert rows["params.yaml"]["blend_oof_acc"] == pytest.approx(
        json.loads((root / "metrics" / "ensemble.json").read_text())["blend_score"]
    )
    assert [rows[key]["count"] for key in ("params.yaml", "plain", "shifted")] == [
        len(E2E_PARAMS["tta"]["views"]),
        1,
        4,
    ]
    assert "| shifted | 4 |" in done.stdout
    views.write_text("turned: [{}, {rotate: 10}]\n")
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert (
        refused.returncode != 0
        and "views.yaml: turned.tta: view {'rotate': 10} has unknown key(s) ['rotate']" in refused.stderr
    )


def changed_stages(root: Path, env: dict) -> set[str]:
    return set(dvc_json(root, env, "status"))


# Modules that different sets of stages import, edited for real under DVC; test_layout.py checks every module's
# place in dvc.yaml without running DVC.
@pytest.mark.parametrize("module", ["evaluation/metrics.py", "training/fold_run.py", "evaluation/blend.py"])
def test_editing_a_shared_module_marks_exactly_the_stages_that_import_it(project_copy, module):
    root, env, _ = project_copy
    assert changed_stages(root, env) == ALWAYS_RUN
    path = root / "pipeline" / module
    path.write_bytes(path.read_bytes() + b"\n# edited\n")
    importers = {
        name
        for name in DVC_STAGES
        if PROJECT / "pipeline" / module in closure(f"pipeline.stages.{name}") | closure("pipeline.__main__")
    }
    expected = {stage for stage in expanded_stages() if stage.split("@")[0] in importers}
    assert changed_stages(root, env) == expected | ALWAYS_RUN


def test_editing_test_time_views_reruns_oof_and_what_follows_never_train(project_copy):
    root, env, _ = project_copy
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tta"]["views"] = [{}, {"hflip": True}, {"shift": [1, 1]}]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    names = list(E2E_PARAMS["backbones"])
    # What reads `tta` itself; ensemble and submission follow once oof@ has rewritten their inputs, teach@ once
    # its teacher's test predictions changed.
    assert (
        changed_stages(root, env)
        == {f"oof@{n}" for n in names}
        | {f"distill@{n}" for n in E2E_PARAMS["distill"]["students"]}
        | {"bundle", "export", "report"}
        | ALWAYS_RUN
    )


def expanded_stages() -> set[str]:
    names = list(E2E_PARAMS["backbones"])
    stages = {"download", "synthesize", "prepare", "folds", "ensemble", "submission", "bundle", "export", "report"}
    stages |= ALWAYS_RUN
    stages |= {f"train@{n}-{f}" for n in names for f in E2E_PARAMS["folds"]["ids"]}
    stages |= {f"teach@{n}" for n in E2E_PARAMS["distill"]["teachers"]}
    stages |= {f"distill@{n}" for n in E2E_PARAMS["distill"]["students"]}
    return stages | {f"oof@{n}" for n in names} | {f"tune@{n}" for n in names}


def test_second_repro_has_nothing_to_do(project):
    root, env, _ = project
    output = repro(root, env)
    assert stages_run(output) == ALWAYS_RUN


def test_same_seed_gives_the_same_folds_and_fold_predictions_in_a_fresh_process(project, tmp_path):
    """Folds and training are the pipeline's only random steps (tuning: tests/test_tune.py); every stage
    after them is a function of their outputs, so equal bytes here mean an equal submission."""
    root, env, _ = project
    again = copy_project(root, tmp_path / "again")
    run = "models/resnet10t/fold0"
    for stage in ("folds", "train@resnet10t-0"):
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
            cwd=again,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and f"Running stage '{stage}'" in done.stdout, done.stderr
    for path in ("folds/folds.csv", f"{run}/oof_plain.csv"):
        assert (root / path).read_bytes() == (again / path).read_bytes(), path
    weights, expected = load_file(again / run / "model.safetensors"), load_file(root / run / "model.safetensors")
    assert weights.keys() == expected.keys() and all(torch.equal(weights[name], expected[name]) for name in expected)
    # The history's other columns are timings.
    learned = ["epoch", "train_loss", "val_loss", "val_acc", "val_score", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(root / run / "history.csv")[learned], pd.read_csv(again / run / "history.csv")[learned]
    )


def test_changing_one_backbone_reruns_only_that_backbone_and_what_follows(project_copy):
    root, env, _ = project_copy
    params = yaml.safe_load((root / "params.yaml").read_text())
    first, second = list(params["backbones"])
    params["backbones"][first] = {**(params["backbones"][first] or {}), "epochs": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(repro(root, env, "submission"))
    expected = {f"tune@{first}"} | {f"train@{first}-{f}" for f in params["folds"]["ids"]}
    assert ran == expected | {f"oof@{first}", "ensemble", "submission"} | ALWAYS_RUN
    # The rest of what follows, told by DVC without spending the int8 export's minute on it.
    assert changed_stages(root, env) == {"bundle", "export", "report"} | ALWAYS_RUN


def test_a_weight_file_replaced_at_the_same_path_reruns_that_backbones_training_alone(project_copy):
    """No param changes when a file is overwritten: the `pretrained` stage's identity is what DVC sees."""
    root, env, _ = project_copy
    first, second = list(E2E_PARAMS["backbones"])
    start = root / "start.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model(first, in_chans=1, num_classes=7).state_dict(), str(start))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["backbones"][first] = {**(params["backbones"][first] or {}), "pretrained": str(start)}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    for command in (["repro", "pretrained"], ["commit", "--force"]):  # as if trained from it: the lock takes it
        done = subprocess.run(dvc + command, cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    recorded = json.loads((root / "pretrained" / f"{first}.json").read_text())
    assert recorded["identity"].startswith("sha256:") and changed_stages(root, env) == ALWAYS_RUN
    save_file(load_file(start), str(start))  # the same tensors written again: nothing to re-run
    repro(root, env, "pretrained")
    assert changed_stages(root, env) == ALWAYS_RUN
    torch.manual_seed(1)
    save_file(timm.create_model(first, in_chans=1, num_classes=7).state_dict(), str(start))
    repro(root, env, "pretrained")
    folds = E2E_PARAMS["folds"]["ids"]
    assert changed_stages(root, env) == {f"tune@{first}"} | {f"train@{first}-{f}" for f in folds} | ALWAYS_RUN
    assert json.loads((root / "pretrained" / f"{second}.json").read_text())["identity"] is None
