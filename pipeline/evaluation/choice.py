"""What the ensemble submits: the blend or the best single backbone (`choose_blend`), and how its probabilities
become the submitted classes where the metric scores classes and OOF says a fitted rule beats the most probable
class: an ordinal grade cut at fitted points (`choose_cuts`), multi-label classes decided at fitted per-class
thresholds (`choose_thresholds`). Every choice is made on cross-fitted OOF figures, which it reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.blend import (
    blend,
    blend_by_fold,
    column_ranks,
    cross_fitted_sharpening,
    fit_sharpness,
    fold_weights,
    greedy_weights,
    sharpen,
)
from pipeline.evaluation.metrics import Metric
from pipeline.evaluation.ordinal import classes_at, cross_fitted_classes, fit_cuts, grades_of, one_hot
from pipeline.evaluation.thresholds import at_thresholds, cross_fitted_thresholds, fit_thresholds


@dataclass(frozen=True)
class Choice:
    """The blend the ensemble submits, or the best single backbone where the blend does not beat it."""

    weights: np.ndarray  # fitted on every OOF row: the test blend's
    weights_of_fold: dict[int, np.ndarray]  # per fold, fitted on the other folds: the honest OOF blend's
    oof: np.ndarray  # cross-fitted OOF predictions, as submitted (tempered under log-loss)
    test: np.ndarray  # the test predictions submitted
    blend_score: float  # the cross-fitted blend's OOF score
    singles: dict[str, float]  # each backbone's OOF score, as it would be submitted
    best_single: str
    fallback: bool
    sharpness: float | None  # under log-loss: the inverse temperature of the submitted probabilities
    verdict: str


def choose_blend(
    names: list[str],
    oof: list[np.ndarray],
    test: list[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    metric: Metric,
    max_steps: int,
) -> Choice:
    if metric.reads == "ranks":  # a ranking metric blends ranks: members on different scales count alike
        oof, test = [column_ranks(p) for p in oof], [column_ranks(p) for p in test]
    calibrate = metric.reads == "probabilities" and labels.ndim == 1  # a temperature tempers one distribution

    def as_submitted(probs: np.ndarray) -> np.ndarray:
        """OOF probabilities as submitted: under log-loss, tempered as fitted on the other folds."""
        return cross_fitted_sharpening(probs, labels, folds) if calibrate else probs

    singles = {name: metric(as_submitted(p), labels) for name, p in zip(names, oof)}
    best = min(singles, key=lambda name: metric.loss(singles[name]))
    weights = greedy_weights(oof, labels, max_steps, metric)
    weights_of_fold = fold_weights(oof, labels, folds, max_steps, metric)
    blended_oof = as_submitted(blend_by_fold(oof, folds, weights_of_fold))
    blend_score = metric(blended_oof, labels)
    fallback = not metric.better(blend_score, than=singles[best])
    verdict = (
        f"The blend ({metric.name} {blend_score:.4f}) beats the best single backbone {best} ({singles[best]:.4f}) "
        "on OOF"
    )
    if fallback:
        weights = np.array([float(name == best) for name in names])
        blended_oof = as_submitted(oof[names.index(best)])
        verdict = (
            f"The blend ({metric.name} {blend_score:.4f}) does not beat {best} alone ({singles[best]:.4f}) on OOF: "
            f"falling back to {best}"
        )
    blended_test, sharpness = blend(test, weights), None
    if calibrate:  # the temperature fitted on all the OOF rows, as the weights are
        sharpness = fit_sharpness(blend(oof, weights), labels)
        blended_test = sharpen(blended_test, sharpness)
    return Choice(
        weights, weights_of_fold, blended_oof, blended_test, blend_score, singles, best, fallback, sharpness, verdict
    )


@dataclass(frozen=True)
class Cuts:
    """An ordinal competition's submitted classes: the blended grade cut where it scores best on OOF."""

    cuts: np.ndarray  # fitted on every OOF row: where the test grades are cut
    oof: np.ndarray  # cross-fitted OOF classes as probability rows (one-hot)
    test: np.ndarray  # the test classes as probability rows (one-hot)
    score: float  # the cross-fitted OOF score of the cut classes
    verdict: str


def choose_cuts(
    chosen: Choice,
    grades: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    num_classes: int,
    metric: Metric,
) -> Cuts | None:
    """The blended grade cut at fitted points, where that beats the most probable class on cross-fitted OOF; else
    None. `grades`: the blended grades of the OOF rows (each fold blended by its own weights), of the OOF rows by
    the submitted weights and of the test rows."""
    fold_blended, blended, test = (grades_of(g, num_classes) for g in grades)
    oof_classes = cross_fitted_classes(fold_blended, labels, folds, num_classes, metric)
    cut_score, argmax_score = metric(one_hot(oof_classes, num_classes), labels), metric(chosen.oof, labels)
    if not metric.better(cut_score, than=argmax_score):
        print(f"ensemble: the grade cut on OOF ({metric.name} {cut_score:.4f}) does not beat the most probable class")
        return None
    cuts = fit_cuts(blended, labels, num_classes, metric)
    verdict = (
        f"The regressed grade cut at {np.round(cuts, 2).tolist()} ({metric.name} {cut_score:.4f}, cross-fitted) "
        f"beats the most probable class ({argmax_score:.4f}) on OOF: submitted so"
    )
    test_classes = one_hot(classes_at(test, cuts), num_classes)
    return Cuts(cuts, one_hot(oof_classes, num_classes), test_classes, cut_score, verdict)


@dataclass(frozen=True)
class Thresholds:
    """A multi-label competition's decisions: each class decided at the threshold that scores best on OOF."""

    thresholds: np.ndarray  # per class, fitted on every OOF row: where the test probabilities are decided
    oof: np.ndarray  # cross-fitted OOF probabilities shifted so that 0.5 decides (thresholds.at_thresholds)
    test: np.ndarray  # the test probabilities so shifted
    score: float
    verdict: str


def choose_thresholds(
    chosen: Choice, blended_oof: np.ndarray, labels: np.ndarray, folds: np.ndarray, metric: Metric
) -> Thresholds | None:
    """Per-class thresholds fitted on OOF where they beat 0.5 on cross-fitted OOF; else None. `blended_oof`: the
    OOF rows blended by the submitted weights."""
    shifted = cross_fitted_thresholds(chosen.oof, labels, folds, metric)
    fitted_score, plain_score = metric(shifted, labels), metric(chosen.oof, labels)
    if not metric.better(fitted_score, than=plain_score):
        print(f"ensemble: thresholds fitted on OOF ({metric.name} {fitted_score:.4f}) do not beat 0.5 for all")
        return None
    thresholds = fit_thresholds(blended_oof, labels, metric)
    verdict = (
        f"Per-class thresholds {np.round(thresholds, 2).tolist()} ({metric.name} {fitted_score:.4f}, cross-fitted) "
        f"beat 0.5 for all ({plain_score:.4f}) on OOF: submitted so"
    )
    return Thresholds(thresholds, shifted, at_thresholds(chosen.test, thresholds), fitted_score, verdict)
