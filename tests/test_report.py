import numpy as np
import pytest

from pipeline.stages.report import bootstrap_interval, format_table, oof_warnings, summarize

CLASSES = ["a", "b", "c"]


def one_hot(predicted: list[int]) -> np.ndarray:
    return np.eye(3)[predicted] * 0.7 + 0.1


def test_accuracy_and_per_class_recall_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 1, 2])
    probs = one_hot([0, 1, 1, 1, 0, 2])  # right: 0, 2, 3, 5
    folds = np.array([0, 1, 0, 1, 0, 1])
    row = summarize("m", probs, labels, folds, CLASSES, plain=one_hot([1, 1, 1, 1, 0, 2]))
    assert row.accuracy == pytest.approx(4 / 6)
    assert row.per_class == pytest.approx({"a": 1 / 2, "b": 2 / 3, "c": 1.0})
    assert row.fold_mean == pytest.approx((2 / 3 + 2 / 3) / 2) and row.fold_std == pytest.approx(0.0)
    assert row.tta_gain == pytest.approx(4 / 6 - 3 / 6)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = (rng.random(200) < 0.7).astype(float)
    large = (rng.random(20000) < 0.7).astype(float)
    low_s, high_s = bootstrap_interval(small)
    low_l, high_l = bootstrap_interval(large)
    assert low_s <= small.mean() <= high_s and low_l <= large.mean() <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 5
    assert bootstrap_interval(small) == (low_s, high_s)  # seeded


def test_warnings_for_missing_class_split_duplicates_and_disagreeing_folds():
    folds = np.repeat([0, 1], 400)
    labels = np.tile([0, 1, 2, 0], 200)
    labels[folds == 1] = np.where(labels[folds == 1] == 2, 0, labels[folds == 1])  # no class c in fold 1
    groups = np.arange(800)
    groups[5] = groups[405]  # a pixel twin across folds
    messages = oof_warnings(folds, labels, CLASSES, {"0": 0.9, "1": 0.6}, groups)
    assert any("fold 1 holds no image of ['c']" in m for m in messages)
    assert any("split across folds" in m for m in messages)
    assert any("fold accuracies range" in m for m in messages)
    clean = oof_warnings(folds, np.tile([0, 1, 2, 0], 200), CLASSES, {"0": 0.70, "1": 0.71}, np.arange(800))
    assert clean == []


def test_table_lists_models_in_the_given_order_with_their_figures():
    labels = np.array([0, 1, 2, 0])
    rows = [summarize(name, one_hot(pred), labels, np.array([0, 0, 1, 1]), CLASSES) for name, pred in
            (("good", [0, 1, 2, 0]), ("bad", [1, 1, 2, 2]))]
    table = format_table(rows, CLASSES)
    assert table.index("good") < table.index("bad") and "1.0000" in table and "0.5000" in table
