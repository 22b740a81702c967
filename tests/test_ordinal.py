"""Ordinal grades: the grade regressed as a target, cut at points fitted on OOF; the synthetic graded competition."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.data import load_prepared
from pipeline.evaluation.choice import choose_blend, choose_cuts
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.ordinal import (
    GRADE,
    classes_at,
    cross_fitted_classes,
    fit_cuts,
    grade_target,
    grades_of,
    one_hot,
)
from pipeline.evaluation.predictions import oof_table, probability_table, with_targets
from pipeline.files import write_csv
from pipeline.ingest.synthetic import GRADES
from pipeline.runtime.bundle_format import BundleInfo, decided_label
from pipeline.stages import ensemble, submission
from pipeline.stages.prepare import prepare
from pipeline.stages.synthesize import write_competition
from tests.conftest import TINY, data_config, tiny_params
from tests.kaggle_standin import score_rows

QWK, RMSE = METRICS["qwk"], METRICS["rmse"]


def shrunk_grades(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grades, labels, folds): a regression pulled toward the commonest grade, as a model trained by squared
    error on imbalanced grades predicts; rounding it under-calls the high grades."""
    labels = rng.choice(5, size=rows, p=[0.4, 0.2, 0.2, 0.12, 0.08])
    grades = 0.6 * labels + 0.3 + rng.normal(0, 0.35, rows)
    return grades, labels, np.arange(rows) % 3


def test_the_grade_target_maps_the_classes_onto_minus_one_to_one_and_back():
    labels = np.array([0, 1, 2, 3, 4])
    target = grade_target(labels, 5)
    assert target.shape == (5, 1) and target[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert np.allclose(grades_of(target[:, 0], 5), labels)
    assert classes_at(np.array([0.49, 0.5, 3.4, 9.0]), np.array([0.5, 1.5, 2.5, 3.5])).tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("metric", [QWK, RMSE], ids=lambda m: m.name)
def test_cuts_fitted_on_oof_beat_rounding_and_hold_on_folds_they_were_not_fitted_on(metric):
    grades, labels, folds = shrunk_grades(np.random.default_rng(0), 3000)
    rounded = metric(one_hot(classes_at(grades, np.arange(4) + 0.5), 5), labels)
    cuts = fit_cuts(grades, labels, 5, metric)
    assert np.all(np.diff(cuts) > 0)
    fitted = metric(one_hot(classes_at(grades, cuts), 5), labels)
    honest = metric(one_hot(cross_fitted_classes(grades, labels, folds, 5, metric), 5), labels)
    assert metric.gain(honest, over=rounded) > (0.02 if metric is QWK else 0.03)
    assert abs(fitted - honest) < 0.02  # five cuts on 2000 rows: the cross-fitted figure barely drops


def test_the_ensemble_submits_cut_grades_only_where_they_beat_the_most_probable_class_on_oof():
    rng = np.random.default_rng(1)
    grades, labels, folds = shrunk_grades(rng, 1500)
    # A classifier that never calls the two rare grades: its most probable class is the grade capped at 2.
    probs = one_hot(np.minimum(labels, 2), 5) * 0.6 + 0.08
    chosen = choose_blend(["a"], [probs], [probs[:100]], labels, folds, QWK, max_steps=3)
    values = 2 * grades / 4 - 1
    cut = choose_cuts(chosen, (values, values, values[:100]), labels, folds, 5, QWK)
    assert cut is not None and cut.score > chosen.blend_score
    assert cut.test.shape == (100, 5) and (cut.test.sum(1) == 1).all()
    assert np.array_equal(cut.test.argmax(1), classes_at(grades[:100], cut.cuts))
    perfect = choose_blend(["a"], [one_hot(labels, 5)], [probs[:100]], labels, folds, QWK, max_steps=3)
    assert choose_cuts(perfect, (values, values, values[:100]), labels, folds, 5, QWK) is None


def test_an_ordinal_metric_adds_the_grade_target_to_the_prepared_graded_competition(tmp_path):
    root = tmp_path / "synthetic"
    write_competition(dataclasses.replace(TINY, task="ordinal", train_per_class=30), root)
    table = pd.read_csv(root / "competition" / "train.csv", dtype=str)
    assert list(table.columns) == ["id_code", "diagnosis"] and set(table["diagnosis"]) == {"0", "1", "2", "3", "4"}
    prepare(root / "competition", data_config(), tmp_path / "graded", ordinal=True)
    data = load_prepared(tmp_path / "graded")
    assert data.classes == ["0", "1", "2", "3", "4"] and data.target_names == [GRADE]
    assert np.allclose(data.train_targets[:, 0], data.train_labels / 2 - 1)
    prepare(root / "competition", data_config(), tmp_path / "plain")
    assert load_prepared(tmp_path / "plain").target_names == []


def test_the_kaggle_stand_in_scores_grades_as_the_metrics_do():
    rng = np.random.default_rng(2)
    truth, guess = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    guess[:120] = truth[:120]
    rows = pd.DataFrame({"id": range(200), "label": truth.astype(str), "label_submitted": guess.astype(str)})
    for metric in (QWK, RMSE):
        assert score_rows(rows, ["label_submitted"], metric.name) == pytest.approx(metric(one_hot(guess, 5), truth))


def test_the_bundle_cuts_a_faces_regressed_grade_as_the_submission_did():
    info = BundleInfo(list(GRADES), 48, 1, 0.5, 0.2, (), targets=["valence", GRADE], cuts=[0.4, 1.2, 2.5, 3.1])
    outputs = np.array([0.9, 0.05, 0.03, 0.01, 0.01, 0.3, 0.0])  # grade 0.0 on [-1, 1]: 2.0 on 0-4
    assert decided_label(outputs, info) == "2"
    assert decided_label(outputs, dataclasses.replace(info, cuts=None)) == "0"


def test_the_ensemble_and_submission_stages_submit_the_members_regressed_grade_cut_on_oof(tmp_path):
    """Members whose classifier calls every face grade 0 but whose regressed grade is near the truth: the ensemble
    stage blends their grades, cuts them where OOF puts the cuts, and the submission spells the cut grades."""
    root = tmp_path / "synthetic"
    write_competition(dataclasses.replace(TINY, task="ordinal", train_per_class=40), root)
    prepare(root / "competition", data_config(), tmp_path / "prepared", ordinal=True)
    data = load_prepared(tmp_path / "prepared")
    truth = pd.read_csv(root / "answers.csv", dtype=str).set_index("id").loc[data.test_ids, "label"].astype(int)
    rng = np.random.default_rng(3)
    folds = np.arange(len(data.train_ids)) % 3
    params = tiny_params(
        backbones={"a": {"model": "resnet10t"}, "b": {"model": "resnet10t"}}, competition={"metric": "qwk"}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("a", "b"):
        for table, ids, labels in (
            ("oof", data.train_ids, data.train_labels),
            ("test_predictions", data.test_ids, truth.to_numpy()),
        ):
            probs = np.tile([0.6, 0.1, 0.1, 0.1, 0.1], (len(ids), 1))
            grades = np.clip(grade_target(labels, 5) + rng.normal(0.1, 0.15, (len(ids), 1)), -1, 1)
            written = (
                oof_table(ids, folds, labels, probs, data.classes)
                if table == "oof"
                else probability_table(ids, probs, data.classes)
            )
            (tmp_path / table).mkdir(exist_ok=True)
            write_csv(with_targets(written, grades, [GRADE]), tmp_path / table / f"{name}.csv")
    folders = ["--data", str(tmp_path / "prepared"), "--params", str(tmp_path / "params.yaml")]
    ensemble.main(
        [*folders, "--oof", str(tmp_path / "oof"), "--test", str(tmp_path / "test_predictions")]
        + ["--out", str(tmp_path / "ensemble"), "--metrics", str(tmp_path / "ensemble.json")]
    )
    submission.main(
        [*folders, "--test", str(tmp_path / "test_predictions"), "--ensemble", str(tmp_path / "ensemble")]
        + ["--out", str(tmp_path / "submissions")]
    )
    weights = json.loads((tmp_path / "ensemble" / "weights.json").read_text())
    assert weights["cuts"] is not None, weights["verdict"]
    blended = pd.read_csv(tmp_path / "ensemble" / "test.csv", dtype={"id": str}).set_index("id")
    submitted = pd.read_csv(tmp_path / "submissions" / "ensemble.csv", dtype=str).set_index("id_code")
    expected = classes_at(grades_of(blended.loc[submitted.index, GRADE].to_numpy(), 5), np.array(weights["cuts"]))
    assert submitted["diagnosis"].astype(int).tolist() == expected.tolist()
    assert QWK(one_hot(expected, 5), truth.loc[submitted.index].to_numpy()) > 0.8
