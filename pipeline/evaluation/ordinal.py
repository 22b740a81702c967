"""Ordinal grades (competition.metric qwk or rmse): the classes are grades in their sorted order.

The model regresses the grade beside its class logits: `prepare` adds the target GRADE, the class
index scaled to the targets' range [-1, 1], so it trains, is averaged over folds and views and is
blended exactly as any regression target (pipeline/training/target_loss.py). A grade becomes a class
at cut points fitted on OOF to the metric, as the winners of Kaggle's grading competitions (APTOS
2019, Diabetic Retinopathy) did; the cut OOF figure is cross-fitted (each fold cut where the other
folds put the cuts), so it stays an honest estimate of the leaderboard.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.cross_fit import cross_fitted
from pipeline.evaluation.metrics import Metric

GRADE = "grade"
ORDINAL_METRICS = ("qwk", "rmse")
CUT_STEPS = 41  # candidate positions per cut and pass, between its neighbours
CUT_PASSES = 3


def grade_target(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The class index as a regression target in [-1, 1] (N×1 float32)."""
    return (2 * labels / (num_classes - 1) - 1).astype(np.float32)[:, None]


def grades_of(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Predicted target values in [-1, 1] back on the class-index scale [0, classes - 1]."""
    return (np.asarray(values, np.float64) + 1) / 2 * (num_classes - 1)


def classes_at(grades: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """The class of each grade: how many cuts lie at or below it."""
    return np.searchsorted(np.asarray(cuts), grades, side="right")


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Classes as probability rows, for the metrics (which read the most probable class)."""
    return np.eye(num_classes)[classes]


def fit_cuts(grades: np.ndarray, labels: np.ndarray, num_classes: int, metric: Metric) -> np.ndarray:
    """The cuts (classes - 1, increasing) that score `grades` best: coordinate search from the half-way points,
    each cut moved between its neighbours to the best of CUT_STEPS positions, CUT_PASSES times over."""
    cuts = np.arange(num_classes - 1) + 0.5

    def loss(candidate: np.ndarray) -> float:
        return metric.loss(metric(one_hot(classes_at(grades, candidate), num_classes), labels))

    for _ in range(CUT_PASSES):
        for i in range(len(cuts)):
            low = cuts[i - 1] if i else min(grades.min(), cuts[i]) - 0.5
            high = cuts[i + 1] if i + 1 < len(cuts) else max(grades.max(), cuts[i]) + 0.5
            candidates = np.linspace(low, high, CUT_STEPS)[1:-1]
            scored = [loss(np.concatenate([cuts[:i], [c], cuts[i + 1 :]])) for c in candidates]
            best = int(np.argmin(scored))
            if scored[best] < loss(cuts):
                cuts[i] = candidates[best]
    return cuts


def cross_fitted_classes(
    grades: np.ndarray, labels: np.ndarray, folds: np.ndarray, num_classes: int, metric: Metric
) -> np.ndarray:
    """Each fold's grades cut where the other folds' fitted cuts lie: OOF classes not flattered by the fit."""
    return cross_fitted(grades, labels, folds, lambda g, y: fit_cuts(g, y, num_classes, metric), classes_at)
