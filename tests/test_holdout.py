"""The labelled holdout (data.holdout_fraction): set aside by prepare from every fold, scored as the test is, and
what the ensemble submits judged there."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ConfigError, config_from_dict
from pipeline.data import load_prepared
from pipeline.evaluation.choice import choose_blend
from pipeline.evaluation.expectation import expect_from_holdout
from pipeline.evaluation.groups import duplicate_groups
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.predictions import read_fold_test_tables
from pipeline.stages.prepare import prepare
from tests.conftest import E2E_MEMBERS, E2E_PARAMS, folds_config, tiny_params

ACCURACY = METRICS["accuracy"]


@pytest.fixture(scope="module")
def held_out(competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("holdout") / "prepared"
    params = config_from_dict(tiny_params())
    prepare(
        competition / "competition", dataclasses.replace(params.data, holdout_fraction=0.25), out, False, params.folds
    )
    return load_prepared(out)


def test_the_holdout_takes_its_share_of_every_class_out_of_the_train_arrays(prepared, held_out):
    whole = load_prepared(prepared)
    assert held_out.has_holdout and not whole.has_holdout
    assert not set(held_out.train_ids) & set(held_out.holdout_ids)
    assert sorted([*held_out.train_ids, *held_out.holdout_ids]) == sorted(whole.train_ids)
    position = {image_id: row for row, image_id in enumerate(whole.train_ids)}
    for ids, images, labels in (
        (held_out.holdout_ids, held_out.holdout_images, held_out.holdout_labels),
        (held_out.train_ids, held_out.train_images, held_out.train_labels),
    ):
        rows = [position[image_id] for image_id in ids]
        assert np.array_equal(np.asarray(images), np.asarray(whole.train_images)[rows])
        assert np.array_equal(labels, whole.train_labels[rows])
    share = np.bincount(held_out.holdout_labels, minlength=len(whole.classes)) / np.bincount(whole.train_labels)
    assert np.all(np.abs(share - 0.25) < 0.1), share
    assert held_out.train_targets is None or len(held_out.train_targets) == len(held_out.train_ids)


def test_pixel_twins_stay_on_one_side_of_the_holdout(prepared, held_out):
    """A twin of a holdout image in training would score the holdout on an image the models saw."""
    whole = load_prepared(prepared)
    twins = duplicate_groups(whole.train_images)
    assert len(np.unique(twins)) < len(twins)  # the tiny competition has repeated images
    side = dict(zip(whole.train_ids, np.isin(whole.train_ids, held_out.holdout_ids)))
    for group in np.unique(twins):
        assert len({side[i] for i in whole.train_ids[twins == group]}) == 1


def test_a_holdout_share_out_of_range_is_refused_with_the_fix():
    params = tiny_params()
    params["data"] = {**params["data"], "holdout_fraction": 0.7}
    with pytest.raises(ConfigError, match=r"holdout_fraction=0.7 .*between 0 \(none\) and 0.5"):
        config_from_dict(params)


def one_hot_votes(labels: np.ndarray, right: np.ndarray, wrong_class: int, classes: int = 3) -> np.ndarray:
    """Probabilities 0.6 on the label where `right`, else on `wrong_class`."""
    guess = np.where(right, labels, wrong_class)
    probs = np.full((len(labels), classes), 0.2)
    probs[np.arange(len(labels)), guess] = 0.6
    return probs


def member(rng, labels: np.ndarray, signal: float) -> np.ndarray:
    """A member's probabilities: the label's logit raised by `signal` above unit noise of its own."""
    logits = signal * np.eye(3)[labels] + rng.normal(0, 1, (len(labels), 3))
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def members_that_blend_well_on_oof(rng, size: int):
    """Two members of equal skill whose errors are independent: their blend beats both."""
    labels = rng.integers(0, 3, size)
    return labels, member(rng, labels, 1.5), member(rng, labels, 1.5)


def test_a_blend_that_wins_on_oof_but_not_on_the_holdout_is_not_submitted():
    """As on FER-2013: averaging its fold models lifted the crop member alone above the blend on the test."""
    rng = np.random.default_rng(0)
    labels, a, b = members_that_blend_well_on_oof(rng, 900)
    folds = np.arange(900) % 3
    test = [rng.random((50, 3)), rng.random((50, 3))]
    on_oof = choose_blend(["a", "b"], [a, b], test, labels, folds, ACCURACY, 10)
    assert on_oof.member is None and on_oof.blend_score > max(on_oof.singles.values())

    held_labels = rng.integers(0, 3, 400)
    # Fold-averaged, a gained far more than b: a alone now beats any blend with b.
    a_held, b_held = member(rng, held_labels, 3.0), member(rng, held_labels, 0.3)
    judged = choose_blend(["a", "b"], [a, b], test, labels, folds, ACCURACY, 10, [a_held, b_held], held_labels)
    assert judged.member == "a" and judged.fallback
    assert judged.weights.tolist() == [1.0, 0.0] and np.array_equal(judged.test, test[0])
    assert np.array_equal(judged.holdout_probs, a_held)
    scores = judged.holdout
    assert scores["submitted"] == scores["members"]["a"] == ACCURACY(a_held, held_labels)
    assert scores["blend"] < scores["members"]["a"] and scores["images"] == 400
    assert "a is submitted alone" in judged.verdict


def test_a_blend_that_also_wins_on_the_holdout_is_submitted():
    rng = np.random.default_rng(1)
    labels, a, b = members_that_blend_well_on_oof(rng, 900)
    held_labels, a_held, b_held = members_that_blend_well_on_oof(rng, 600)
    folds = np.arange(900) % 3
    test = [rng.random((50, 3)), rng.random((50, 3))]
    judged = choose_blend(["a", "b"], [a, b], test, labels, folds, ACCURACY, 10, [a_held, b_held], held_labels)
    assert judged.member is None and not judged.fallback
    assert judged.holdout["submitted"] == judged.holdout["blend"] > max(judged.holdout["members"].values())
    assert np.allclose(judged.holdout_probs, judged.weights[0] * a_held + judged.weights[1] * b_held)


def test_the_expected_leaderboard_from_the_holdout_narrows_with_more_holdout_images():
    rng = np.random.default_rng(2)

    def expectation(size: int):
        labels = rng.integers(0, 3, size)
        return expect_from_holdout(one_hot_votes(labels, np.arange(size) % 10 < 7, 0), labels, ACCURACY, 7178, 0.95)

    small, large = expectation(300), expectation(3000)
    for expected in (small, large):
        assert expected.interval[0] < expected.score < expected.interval[1]
    assert large.interval[1] - large.interval[0] < small.interval[1] - small.interval[0]
    # The leaderboard's own 3,589 images bound it below: half a point either side at 70% even with endless holdout.
    assert large.interval[1] - large.interval[0] > 2 * 1.96 * np.sqrt(0.7 * 0.3 / 3589) - 1e-9


def test_holdout_settings_are_drawn_as_the_folds_are():
    """One seed, one holdout; the folds' groups keep a subject's images together."""
    from pipeline.evaluation.splits import holdout_mask

    labels = np.repeat(np.arange(3), 40)
    subjects = np.arange(120) // 4
    first = holdout_mask(labels, subjects, 0.2, folds_config(seed=5))
    assert np.array_equal(first, holdout_mask(labels, subjects, 0.2, folds_config(seed=5)))
    assert not np.array_equal(first, holdout_mask(labels, subjects, 0.2, folds_config(seed=6)))
    for subject in np.unique(subjects):
        assert len(set(first[subjects == subject])) == 1
    assert 0.1 < first.mean() < 0.3


def test_dvc_repro_scores_the_holdout_with_every_fold_model_and_the_ensemble_judges_there(e2e_project):
    root, _, output = e2e_project
    data = load_prepared(root / "data" / "prepared")
    folds = pd.read_csv(root / "folds" / "folds.csv", dtype={"id": str})
    assert data.has_holdout and not set(folds["id"]) & set(data.holdout_ids)
    averaged = {}
    for name in E2E_MEMBERS:
        table = pd.read_csv(root / "test_predictions" / f"{name}.holdout.csv", dtype={"id": str})
        assert sorted(set(table["fold"])) == E2E_PARAMS["folds"]["ids"]
        per_fold = read_fold_test_tables(
            root / "test_predictions" / f"{name}.holdout.csv",
            data.classes,
            data.holdout_ids,
            tuple(E2E_PARAMS["folds"]["ids"]),
        )
        averaged[name] = np.mean(per_fold, axis=0)
        held = json.loads((root / "metrics" / f"{name}.json").read_text())["holdout"]
        assert held["score"] == pytest.approx(ACCURACY(averaged[name], data.holdout_labels))
        alone = np.mean([ACCURACY(p, data.holdout_labels) for p in per_fold])
        assert held["fold_averaging_gain"] == pytest.approx(held["score"] - alone)
    weights = json.loads((root / "ensemble" / "weights.json").read_text())
    judged = weights["holdout"]
    assert judged["members"] == pytest.approx({n: ACCURACY(p, data.holdout_labels) for n, p in averaged.items()})
    submitted = pd.read_csv(root / "ensemble" / "holdout.csv", dtype={"id": str})
    assert list(submitted["id"]) == list(data.holdout_ids)
    assert judged["submitted"] == pytest.approx((submitted["pred"] == submitted["label"]).mean())
    if judged["member_wins"]:  # the member that scored best there is what is submitted
        member = judged["best_member"]
        assert weights["weights"][member] == 1.0
        assert pd.read_csv(root / "submissions" / "ensemble.csv").equals(
            pd.read_csv(root / "submissions" / f"{member}.csv")
        )
    else:
        assert judged["blend"] > max(judged["members"].values())
    report = json.loads((root / "metrics" / "report.json").read_text())["expected_leaderboard"]
    assert report["source"] == "holdout" and report["score"] == pytest.approx(judged["submitted"])
    assert report["ci_low"] < report["score"] < report["ci_high"]
    assert "holdout images, which no model trained on" in (root / "report" / "report.md").read_text()
