"""Per-class thresholds of multi-label probabilities, fitted on OOF to a metric of the decided classes (F1).

An image is decided to have a class when its probability reaches the class's threshold. Rather than carry
thresholds beside the probabilities, the probabilities are shifted on the log-odds scale so that each
class's threshold lands on 0.5 (:func:`at_thresholds`): every reader then decides at 0.5 (metrics.decisions),
and the ranks within a class, all that ROC AUC reads, are unchanged. The OOF figure of fitted thresholds is
cross-fitted (each fold decided at the thresholds fitted on the other folds), so it stays honest.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.cross_fit import cross_fitted
from pipeline.evaluation.metrics import Metric

THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)
THRESHOLD_PASSES = 2  # a class's best threshold moves with the others' under a per-image metric (mean F1)
EPSILON = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


def at_thresholds(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`probs` shifted on the log-odds scale so that each class's threshold becomes 0.5."""
    return 1 / (1 + np.exp(-(_logit(probs) - _logit(np.asarray(thresholds)))))


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, metric: Metric) -> np.ndarray:
    """Per class, the threshold of THRESHOLD_GRID that scores best by `metric`, the others held, from 0.5 for all
    and THRESHOLD_PASSES times over the classes; a move must gain to be taken."""
    thresholds = np.full(probs.shape[1], 0.5)
    for _ in range(THRESHOLD_PASSES):
        for c in range(probs.shape[1]):

            def loss(value: float, c: int = c) -> float:
                trial = thresholds.copy()
                trial[c] = value
                return metric.loss(metric(at_thresholds(probs, trial), labels))

            scored = [loss(value) for value in THRESHOLD_GRID]
            best = int(np.argmin(scored))
            if scored[best] < loss(thresholds[c]):
                thresholds[c] = THRESHOLD_GRID[best]
    return thresholds


def cross_fitted_thresholds(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, metric: Metric) -> np.ndarray:
    """OOF probabilities where each fold is shifted by the thresholds fitted on the other folds only."""
    return cross_fitted(probs, labels, folds, lambda p, y: fit_thresholds(p, y, metric), at_thresholds)
