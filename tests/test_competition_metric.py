"""The competition's metric and its submission form: read from the sample, scored as Kaggle scores, used by the
blend, and written in the sample's shape."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.config import METRIC_NAMES, SYNTHETIC_FORMS
from pipeline.data import BINARY_FORM, LABEL_FORM, PROBABILITY_FORM, load_prepared
from pipeline.errors import ConfigError
from pipeline.evaluation.blend import column_ranks, cross_fitted_sharpening, greedy_weights, sharpen
from pipeline.evaluation.choice import choose_blend
from pipeline.evaluation.metrics import METRICS, competition_metric
from pipeline.evaluation.submission_format import SubmissionError, make_submission, read_sample, validate_submission
from pipeline.stages.prepare import SourceError, prepare
from pipeline.stages.synthesize import write_competition
from tests.conftest import TINY, data_config
from tests.kaggle_standin import score_rows


def test_the_metrics_params_accept_are_the_metrics_scored():
    assert METRIC_NAMES == ("auto", *METRICS)
    assert SYNTHETIC_FORMS == (LABEL_FORM, PROBABILITY_FORM)


def test_auto_is_log_loss_for_probability_columns_and_accuracy_for_a_label_column():
    assert competition_metric("auto", PROBABILITY_FORM).name == "log_loss"
    assert competition_metric("auto", BINARY_FORM).name == "log_loss"
    assert competition_metric("auto", LABEL_FORM).name == "accuracy"
    assert competition_metric("macro_f1", PROBABILITY_FORM).name == "macro_f1"


def test_a_probability_metric_for_a_label_submission_is_refused_with_the_metrics_that_fit():
    with pytest.raises(ConfigError, match=r"competition.metric roc_auc scores probabilities.*'macro_f1'"):
        competition_metric("roc_auc", LABEL_FORM)


def test_log_loss_is_kaggles_clipped_and_rescaled_and_lower_is_better():
    probs = np.array([[0.0, 1.0, 0.0], [0.2, 0.2, 0.2], [0.7, 0.2, 0.1]])  # a sure miss and an unnormalised row
    labels = np.array([0, 1, 0])
    answers = pd.DataFrame({"label": ["a", "b", "a"], "a": probs[:, 0], "b": probs[:, 1], "c": probs[:, 2]})
    metric = METRICS["log_loss"]
    assert metric(probs, labels) == pytest.approx(score_rows(answers, ["a", "b", "c"], "log_loss"))
    assert np.isfinite(metric(probs, labels))
    assert metric.better(0.5, than=0.6) and not METRICS["accuracy"].better(0.5, than=0.6)
    assert metric.gain(0.5, over=0.6) == pytest.approx(0.1)


def test_the_blend_fitted_on_macro_f1_keeps_the_member_that_finds_the_rare_class():
    labels = np.array([0] * 90 + [1] * 10)
    majority = np.tile([0.9, 0.1], (100, 1))  # accuracy 0.90, never the rare class
    finder = np.tile([0.8, 0.2], (100, 1))
    finder[90:] = [0.2, 0.8]  # every rare image found...
    finder[:14] = [0.05, 0.95]  # ...at the cost of 14 majority ones, surely: accuracy 0.86, macro-F1 0.77
    # A blend with weight w on `majority` finds the rare class below w = 0.43 and drops the false alarms above 0.53.
    by_f1 = greedy_weights([majority, finder], labels, 10, METRICS["macro_f1"])
    by_accuracy = greedy_weights([majority, finder], labels, 10, METRICS["accuracy"])
    assert by_f1[0] < 0.43 and by_accuracy[0] > 0.53


def test_under_log_loss_over_confident_probabilities_are_tempered_by_the_other_folds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    folds = np.arange(600) % 3
    right = rng.random(600) < 0.6
    guess = np.where(right, labels, (labels + 1) % 3)
    probs = np.full((600, 3), 0.01)
    probs[np.arange(600), guess] = 0.98  # 60% right, always 98% sure
    tempered = cross_fitted_sharpening(probs, labels, folds)
    assert np.allclose(tempered.sum(1), 1) and (tempered.argmax(1) == guess).all()
    assert METRICS["log_loss"](tempered, labels) < METRICS["log_loss"](probs, labels) - 0.5


@pytest.fixture(scope="module")
def probability_competition(tmp_path_factory):
    root = tmp_path_factory.mktemp("probabilities") / "synthetic"
    write_competition(dataclasses.replace(TINY, submission_form=PROBABILITY_FORM), root)
    return root / "competition"


def test_prepare_reads_the_probability_form_and_submissions_keep_the_samples_columns(probability_competition, tmp_path):
    out = tmp_path / "prepared"
    prepare(probability_competition, data_config(), out)
    data = load_prepared(out)
    sample = read_sample(out / "sample_submission.csv")
    assert data.submission_form == PROBABILITY_FORM
    assert sorted(data.submission_labels) == sorted(sample.columns[1:])
    probs = np.random.default_rng(0).dirichlet(np.ones(len(data.classes)), len(data.test_ids))
    submission = make_submission(probs, data.test_ids, sample, data.submission_labels, "x.csv")
    assert list(submission.columns) == list(sample.columns)
    for i, column in enumerate(data.submission_labels):
        assert np.allclose(submission[column], probs[:, i])
    broken = submission.copy()
    broken.iloc[3, 2] = 1.5
    with pytest.raises(SubmissionError, match=rf"row 5, column '{sample.columns[2]}' holds '1.5'"):
        validate_submission(broken, sample, data.submission_labels, "x.csv")


def test_a_sample_without_a_column_for_a_class_is_refused_naming_it(probability_competition, tmp_path):
    sample_path = probability_competition / "sample_submission.csv"
    sample = pd.read_csv(sample_path, dtype=str)
    missing = sample.columns[-1]
    damaged = tmp_path / "competition"
    shutil.copytree(probability_competition, damaged)
    sample.drop(columns=missing).to_csv(damaged / "sample_submission.csv", index=False)
    with pytest.raises(SourceError, match=rf"has no probability column for class\(es\) \['{missing}'\]"):
        prepare(damaged, data_config(), tmp_path / "out")


def members_on_two_scales(rng: np.random.Generator, rows: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Two informative members, one sure of itself and one timid: what a blend of ranks puts on one scale."""
    labels = rng.integers(0, 3, rows)
    members = []
    for sharpness in (4.0, 0.3):
        logits = rng.normal(size=(rows, 3)) + 1.5 * np.eye(3)[labels]
        probs = np.exp(sharpness * logits)
        members.append(probs / probs.sum(1, keepdims=True))
    return members, labels


def test_under_roc_auc_the_ensemble_blends_ranks_and_submits_values_from_0_to_1():
    rng = np.random.default_rng(1)
    members, labels = members_on_two_scales(rng, 600)
    test, _ = members_on_two_scales(rng, 200)
    chosen = choose_blend(["sure", "timid"], members, test, labels, np.arange(600) % 3, METRICS["roc_auc"], 10)
    assert chosen.sharpness is None and ((chosen.test > 0) & (chosen.test <= 1)).all()
    ranked_test = chosen.weights @ np.stack([column_ranks(p) for p in test]).reshape(2, -1)
    assert np.allclose(chosen.test.ravel(), ranked_test)
    assert chosen.blend_score == pytest.approx(METRICS["roc_auc"](chosen.oof, labels))


def test_under_log_loss_the_ensemble_submits_tempered_probabilities():
    rng = np.random.default_rng(2)
    members, labels = members_on_two_scales(rng, 600)
    test, _ = members_on_two_scales(rng, 200)
    chosen = choose_blend(["sure", "timid"], members, test, labels, np.arange(600) % 3, METRICS["log_loss"], 10)
    assert chosen.sharpness is not None and np.allclose(chosen.test.sum(1), 1)
    untempered = sum(w * p for w, p in zip(chosen.weights, test))
    assert np.allclose(chosen.test, sharpen(untempered, chosen.sharpness))
    assert chosen.singles["sure"] < METRICS["log_loss"](members[0], labels)  # scored as it would be submitted


def test_a_two_class_competition_asking_for_one_probability_submits_the_second_classs(competition, tmp_path):
    """Dogs vs. Cats Redux's form: id,label with 0.5, the label being the probability of the second class."""
    binary = tmp_path / "competition"
    shutil.copytree(competition / "competition", binary)
    sample = pd.read_csv(binary / "sample_submission.csv", dtype=str)
    sample.assign(label="0.5").to_csv(binary / "sample_submission.csv", index=False)
    with pytest.raises(SourceError, match=r"one column of probabilities \(the binary form\) for 7 classes"):
        prepare(binary, data_config(), tmp_path / "refused")
    prepare(binary, data_config(drop_classes=("angry", "disgust", "fear", "neutral", "surprise")), tmp_path / "two")
    data = load_prepared(tmp_path / "two")
    assert data.classes == ["happy", "sad"] and data.submission_form == BINARY_FORM
    probs = np.random.default_rng(0).dirichlet(np.ones(2), len(data.test_ids))
    read = read_sample(tmp_path / "two" / "sample_submission.csv")
    submission = make_submission(probs, data.test_ids, read, data.submission_labels, "x.csv")
    assert list(submission.columns) == ["id", "label"] and np.allclose(submission["label"], probs[:, 1])
