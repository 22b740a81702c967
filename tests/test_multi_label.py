"""Multi-label competitions: label sets read from a label table, stratified folds, per-class thresholds fitted on OOF,
and submissions as space-separated labels or one column per class."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.data import LABEL_FORM, PROBABILITY_FORM, load_prepared
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import METRICS, competition_metric, decisions, score
from pipeline.evaluation.splits import assign_folds
from pipeline.evaluation.submission_format import SubmissionError, make_submission, read_sample, validate_submission
from pipeline.evaluation.thresholds import at_thresholds, cross_fitted_thresholds, fit_thresholds
from pipeline.ingest.synthetic import ATTRIBUTES
from pipeline.runtime.bundle_format import BundleInfo, decided_label
from pipeline.stages.prepare import prepare
from pipeline.stages.synthesize import write_competition
from pipeline.training.class_balance import multi_label_loss
from tests.conftest import TINY, data_config, folds_config, train_config
from tests.kaggle_standin import score_rows

MEAN_F1 = METRICS["mean_f1"]


@pytest.fixture(scope="module")
def attribute_competition(tmp_path_factory):
    root = tmp_path_factory.mktemp("attributes") / "synthetic"
    write_competition(dataclasses.replace(TINY, task="multi_label", train_per_class=30), root)
    return root


def test_a_label_table_listing_several_labels_per_image_is_prepared_as_multi_label(attribute_competition, tmp_path):
    prepare(attribute_competition / "competition", data_config(), tmp_path / "prepared")
    data = load_prepared(tmp_path / "prepared")
    truth = pd.read_csv(attribute_competition / "train_truth.csv", dtype=str).set_index("id").loc[data.train_ids]
    assert data.multi_label and data.classes == sorted(ATTRIBUTES) and data.submission_form == LABEL_FORM
    assert data.train_labels.shape == (len(truth), len(ATTRIBUTES))
    for row, cell in zip(data.train_labels, truth["label"]):
        assert {data.classes[i] for i in np.flatnonzero(row)} == set(cell.split())


def test_a_pipe_separated_table_merges_and_drops_classes_one_by_one(attribute_competition, tmp_path):
    source = tmp_path / "competition"
    import shutil

    shutil.copytree(attribute_competition / "competition", source)
    table = pd.read_csv(source / "train_labels.csv", dtype=str)
    table["tags"] = table["tags"].str.replace(" ", "|")
    table.to_csv(source / "train_labels.csv", index=False)
    config = data_config(drop_classes=("frowning",), merge_classes={"wide_eyes": "raised_brows"})
    prepare(source, config, tmp_path / "prepared")
    data = load_prepared(tmp_path / "prepared")
    assert data.classes == ["open_mouth", "raised_brows", "smiling"]
    either = table["tags"].str.contains("wide_eyes|raised_brows", regex=True).to_numpy()
    by_id = dict(zip(table["image_name"], either))
    assert data.train_labels[:, 1].astype(bool).tolist() == [by_id[i] for i in data.train_ids]


def test_iterative_stratification_keeps_every_classs_share_in_every_fold_and_groups_whole():
    rng = np.random.default_rng(0)
    labels = (rng.random((3000, 6)) < [0.02, 0.05, 0.1, 0.2, 0.4, 0.6]).astype(np.float32)
    groups = np.arange(3000) // 3
    fold = assign_folds(labels, groups, folds_config(ids=(0, 1, 2, 3)))
    per_fold = np.array([labels[fold == k].sum(axis=0) for k in range(4)])
    expected = labels.sum(axis=0) / 4
    assert (np.abs(per_fold - expected) <= np.maximum(3, 0.03 * expected)).all(), per_fold
    assert pd.Series(fold).groupby(groups).nunique().max() == 1


def test_decisions_take_the_classes_at_one_half_and_the_most_probable_where_none_reaches_it():
    probs = np.array([[0.7, 0.6, 0.1], [0.2, 0.4, 0.3]])
    assert decisions(probs).tolist() == [[1, 1, 0], [0, 1, 0]]
    labels = np.array([[1, 0, 0], [0, 1, 1]])
    assert MEAN_F1(probs, labels) == pytest.approx(np.mean([2 / 3, 2 / 3]))
    answers = pd.DataFrame({"label": ["a", "b c"], "tags": ["a b", "b"]})
    assert score_rows(answers, ["tags"], "mean_f1") == pytest.approx(MEAN_F1(probs, labels))
    scores = score(probs, labels, np.array([0, 1]), ["a", "b", "c"], MEAN_F1)
    assert scores["accuracy"] == 0 and scores["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0}


def test_multi_label_metrics_are_asked_for_where_the_form_is_ambiguous():
    assert competition_metric("auto", LABEL_FORM, multi_label=True).name == "mean_f1"
    with pytest.raises(ConfigError, match="mean_f1 or macro_f1 for decisions, roc_auc or log_loss for probabilities"):
        competition_metric("auto", PROBABILITY_FORM, multi_label=True)
    with pytest.raises(ConfigError, match="does not score multi-label data"):
        competition_metric("qwk", LABEL_FORM, multi_label=True)
    with pytest.raises(ConfigError, match="does not score single-label data"):
        competition_metric("mean_f1", LABEL_FORM)


def under_confident(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, labels, folds) of a model whose rare classes never reach 0.5, though it ranks them well."""
    labels = (rng.random((rows, 4)) < [0.05, 0.1, 0.3, 0.5]).astype(np.float32)
    probs = np.clip(labels * 0.35 + rng.normal(0.1, 0.12, labels.shape), 0.001, 0.999)
    probs[:, 3] = np.clip(labels[:, 3] * 0.5 + rng.normal(0.25, 0.15, rows), 0.001, 0.999)
    return probs, labels, np.arange(rows) % 3


def test_thresholds_fitted_on_oof_beat_one_half_on_folds_they_were_not_fitted_on_and_keep_the_ranks():
    probs, labels, folds = under_confident(np.random.default_rng(1), 1500)
    thresholds = fit_thresholds(probs, labels, MEAN_F1)
    assert (thresholds[:3] < 0.5).all()
    honest = MEAN_F1(cross_fitted_thresholds(probs, labels, folds, MEAN_F1), labels)
    assert honest > MEAN_F1(probs, labels) + 0.04
    shifted = at_thresholds(probs, thresholds)
    assert METRICS["roc_auc"](shifted, labels) == pytest.approx(METRICS["roc_auc"](probs, labels))
    assert ((shifted >= 0.5) == (probs >= thresholds)).all()


@pytest.mark.parametrize("form", [LABEL_FORM, PROBABILITY_FORM])
def test_submissions_list_the_decided_labels_or_fill_one_column_per_class(tmp_path, form):
    root = tmp_path / "synthetic"
    write_competition(dataclasses.replace(TINY, task="multi_label", submission_form=form), root)
    prepare(root / "competition", data_config(), tmp_path / "prepared")
    data = load_prepared(tmp_path / "prepared")
    sample = read_sample(tmp_path / "prepared" / "sample_submission.csv")
    probs = np.random.default_rng(2).random((len(data.test_ids), len(data.classes)))
    names = data.submission_labels
    if form == LABEL_FORM:
        submission = make_submission(probs, data.test_ids, sample, names, "x.csv", multi_label=True)
        chosen = decisions(probs)
        expected = [" ".join(np.array(names)[row > 0]) for row in chosen]
        assert submission["tags"].tolist() == expected
        broken = submission.assign(tags=submission["tags"].where(submission.index != 2, "smiling grinning"))
        with pytest.raises(SubmissionError, match=r"\['grinning'\] are not among the competition's labels"):
            validate_submission(broken, sample, names, "x.csv", multi_label=True)
        return
    decided = make_submission(probs, data.test_ids, sample, names, "x.csv", multi_label=True, decided=True)
    as_probs = make_submission(probs, data.test_ids, sample, names, "x.csv", multi_label=True)
    for i, column in enumerate(names):
        assert decided[column].tolist() == decisions(probs)[:, i].tolist()
        assert np.allclose(as_probs[column], probs[:, i])


def test_the_multi_label_loss_weighs_rare_positives_and_shifts_by_prior_log_odds():
    counts, images = np.array([10, 50]), 100
    weighted = multi_label_loss(train_config(class_balance="weights", label_smoothing=0.0), counts, images, "cpu")
    assert weighted.pos_weight.tolist() == [9.0, 1.0]
    adjusted = multi_label_loss(train_config(class_balance="logit_adjustment"), counts, images, "cpu")
    assert adjusted.shift.tolist() == pytest.approx([np.log(0.1 / 0.9), 0.0], abs=1e-6)


def test_the_bundle_decides_a_faces_labels_as_the_submission_did():
    info = BundleInfo(["a", "b", "c"], 48, 1, 0.5, 0.2, (), multi_label=True, thresholds=[0.3, 0.5, 0.9])
    assert decided_label(np.array([0.35, 0.6, 0.8]), info) == "a b"
    assert decided_label(np.array([0.1, 0.2, 0.85]), info) == "c"  # none reaches its threshold: the most probable
    at_half = dataclasses.replace(info, thresholds=None)
    assert decided_label(np.array([0.35, 0.6, 0.8]), at_half) == "b c"
