import numpy as np
import pytest

from pipeline.evaluation.bootstrap import bootstrap_interval
from pipeline.evaluation.groups import pattern_groups
from pipeline.evaluation.metrics import ACCURACY, METRICS
from pipeline.evaluation.predictions import oof_table
from pipeline.files import write_csv
from pipeline.stages.report import (
    add_training_time,
    agreement_section,
    budget_lines,
    format_table,
    oof_warnings,
    summarize,
    ungrouped_names_warning,
)
from tests.conftest import folds_config

CLASSES = ["a", "b", "c"]
UNGROUPED = folds_config(group_pattern=None, groups_csv=None)


def subject_files(subjects: int = 20, per_subject: int = 6, separator: str = "_") -> tuple[np.ndarray, np.ndarray]:
    """(files, labels) named like CK+: S010_004_00000017.png, each subject's frames in every class."""
    labels = np.array([(s + f) % 3 for s in range(subjects) for f in range(per_subject)])
    files = np.array(
        [
            f"train/{CLASSES[(s + f) % 3]}/S{10 + s:03d}{separator}004{separator}{f:08d}.png"
            for s in range(subjects)
            for f in range(per_subject)
        ]
    )
    return files, labels


def unique_files(n: int) -> np.ndarray:
    return np.array([f"train_images/{i:05x}.jpg" for i in range(n)])


def one_hot(predicted: list[int]) -> np.ndarray:
    return np.eye(3)[predicted] * 0.7 + 0.1


def test_accuracy_and_per_class_recall_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 1, 2])
    probs = one_hot([0, 1, 1, 1, 0, 2])  # right: 0, 2, 3, 5
    folds = np.array([0, 1, 0, 1, 0, 1])
    row = summarize("m", probs, labels, folds, CLASSES, ACCURACY, plain=one_hot([1, 1, 1, 1, 0, 2]))
    assert row.accuracy == pytest.approx(4 / 6)
    assert row.per_class == pytest.approx({"a": 1 / 2, "b": 2 / 3, "c": 1.0})
    assert row.fold_mean == pytest.approx((2 / 3 + 2 / 3) / 2) and row.fold_std == pytest.approx(0.0)
    assert row.tta_gain == pytest.approx(4 / 6 - 3 / 6)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = (rng.random(200) < 0.7).astype(float)
    large = (rng.random(20000) < 0.7).astype(float)
    low_s, high_s = bootstrap_interval(np.mean, small)
    low_l, high_l = bootstrap_interval(np.mean, large)
    assert low_s <= small.mean() <= high_s and low_l <= large.mean() <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 5
    assert bootstrap_interval(np.mean, small) == (low_s, high_s)  # seeded


def test_warnings_for_missing_class_split_duplicates_and_disagreeing_folds():
    folds = np.repeat([0, 1], 400)
    labels = np.tile([0, 1, 2, 0], 200)
    labels[folds == 1] = np.where(labels[folds == 1] == 2, 0, labels[folds == 1])  # no class c in fold 1
    groups = np.arange(800)
    groups[5] = groups[405]  # a pixel twin across folds
    messages = oof_warnings(folds, labels, CLASSES, {"0": 0.9, "1": 0.6}, groups, unique_files(800), UNGROUPED)
    assert any("fold 1 holds no image of ['c']" in m for m in messages)
    assert any("split across folds" in m for m in messages)
    assert any("fold accuracies range" in m for m in messages)
    clean = oof_warnings(
        folds, np.tile([0, 1, 2, 0], 200), CLASSES, {"0": 0.70, "1": 0.71}, np.arange(800), unique_files(800), UNGROUPED
    )
    assert clean == []


def test_subject_like_names_without_grouping_warn_with_the_pattern_that_groups_them():
    files, labels = subject_files()
    messages = oof_warnings(
        np.arange(120) % 2, labels, CLASSES, {"0": 0.70, "1": 0.71}, np.arange(120), files, UNGROUPED
    )
    (message,) = messages
    assert "20 file-name prefixes (e.g. 'S010')" in message and "6.0 images each" in message
    assert "folds.group_pattern: '^([^_]+)_' (or folds.groups_csv)" in message


@pytest.mark.parametrize("separator", ["_", "-", " ", "."])
def test_the_suggested_pattern_groups_the_images_by_their_prefix(separator):
    files, labels = subject_files(separator=separator)
    message = ungrouped_names_warning(files, labels, UNGROUPED)
    pattern = message.split("folds.group_pattern: '")[1].split("'")[0]
    groups = pattern_groups(files, pattern)
    assert len(set(groups)) == 20 and len(set(groups[:6])) == 1


def test_names_that_name_the_class_the_data_set_or_nothing_do_not_warn():
    labels = np.repeat([0, 1, 2], 40)
    class_prefixes = np.array([f"train/{CLASSES[y]}/{CLASSES[y]}_{i:03d}.png" for i, y in enumerate(labels)])
    one_prefix = np.array([f"train/{CLASSES[y]}/Training_{i}.jpg" for i, y in enumerate(labels)])
    table_rows = np.array([f"fer2013.csv:{i}" for i in range(len(labels))])
    split_prefixes = np.array(
        [f"train/{CLASSES[y]}/{('Training', 'PublicTest')[i % 2]}_{i}.jpg" for i, y in enumerate(labels)]
    )
    for files in (class_prefixes, one_prefix, table_rows, unique_files(len(labels)), split_prefixes):
        assert ungrouped_names_warning(files, labels, UNGROUPED) is None, files[0]


def test_few_images_per_shared_prefix_do_not_warn():
    files, labels = subject_files(subjects=60, per_subject=2)  # pairs: splitting them inflates OOF little
    assert ungrouped_names_warning(files, labels, UNGROUPED) is None


def test_no_warning_once_a_grouping_is_set():
    files, labels = subject_files()
    assert ungrouped_names_warning(files, labels, UNGROUPED) is not None
    assert ungrouped_names_warning(files, labels, folds_config(group_pattern=r"^(S[0-9]+)_", groups_csv=None)) is None
    assert ungrouped_names_warning(files, labels, folds_config(group_pattern=None, groups_csv="groups.csv")) is None


def test_table_lists_models_in_the_given_order_with_their_figures():
    labels = np.array([0, 1, 2, 0])
    rows = [
        summarize(name, one_hot(pred), labels, np.array([0, 0, 1, 1]), CLASSES, ACCURACY)
        for name, pred in (("good", [0, 1, 2, 0]), ("bad", [1, 1, 2, 2]))
    ]
    table = format_table(rows, CLASSES)
    assert table.index("good") < table.index("bad") and "1.0000" in table and "0.5000" in table


def test_under_another_metric_the_table_ranks_and_heads_by_it_with_accuracy_beside():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 2])
    folds = np.array([0, 1] * 4)
    majority, finder = (
        summarize(name, one_hot(pred), labels, folds, CLASSES, METRICS["macro_f1"])
        for name, pred in (("majority", [0] * 8), ("finder", [0, 0, 0, 1, 1, 2, 1, 2]))
    )
    assert (majority.score, majority.accuracy) == (pytest.approx(0.2857, abs=1e-4), 0.75)
    assert finder.score > majority.score and finder.accuracy < majority.accuracy
    table = format_table([finder, majority], CLASSES)
    header = table.splitlines()[0]
    assert "OOF macro_f1" in header and "OOF acc" in header
    assert header.index("OOF macro_f1") < header.index("OOF acc")
    assert f"| finder | {finder.score:.4f} |" in table


def test_a_budgeted_backbone_shows_its_budget_beside_the_minutes_it_took():
    labels = np.array([0, 1, 2, 0])
    budgeted, free = (
        summarize(name, one_hot([0, 1, 2, 0]), labels, np.array([0, 0, 1, 1]), CLASSES, ACCURACY)
        for name in ("budgeted", "free")
    )
    add_training_time(
        budgeted,
        [
            {"seconds": 290, "budget_seconds": 300, "planned_epochs": 23},
            {"seconds": 280, "budget_seconds": 300, "planned_epochs": 22},
        ],
    )
    add_training_time(free, [{"seconds": 60, "budget_seconds": None, "planned_epochs": 10}] * 2)
    assert budgeted.train_minutes == pytest.approx(9.5) and budgeted.as_metrics()["budget_minutes"] == pytest.approx(
        10.0
    )
    assert free.train_minutes == pytest.approx(2.0) and free.budget_minutes is None
    assert budget_lines([budgeted, free]) == [
        "Time budget of budgeted: 10.0 min, 9.5 min taken, epochs per fold 23, 22."
    ]


def test_agreement_is_the_share_of_oof_images_two_backbones_give_the_same_class(tmp_path):
    ids, labels, folds = np.array(["p", "q", "r", "s"]), np.array([0, 1, 2, 0]), np.array([0, 0, 1, 1])
    predicted = {"a": [0, 1, 2, 0], "b": [0, 1, 1, 1], "c": [2, 2, 1, 1]}
    for name, pred in predicted.items():
        write_csv(oof_table(ids, folds, labels, one_hot(pred), CLASSES), tmp_path / f"{name}.csv")
    data = type("Data", (), {"classes": CLASSES, "train_ids": ids, "multi_label": False})
    text, pairs = agreement_section(list(predicted), data, tmp_path)
    assert pairs == {"a|b": 0.5, "a|c": 0.0, "b|c": 0.5}
    assert "| a | 0.500 | 0.000 |" in text and "| b |  | 0.500 |" in text
