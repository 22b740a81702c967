"""Regression targets beside the expression class (valence, arousal): how label tables mark a missing value, and
their scores (RMSE, Lin's concordance correlation) with bootstrap intervals, on the non-missing rows."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.bootstrap import bootstrap_interval

MISSING_MARK = -2.0  # how AffectNet-style tables write a missing valence or arousal
VALUE_RANGE = (-1.0, 1.0)
MIN_CCC_ROWS = 2  # a concordance needs two values to have a variance


def rmse(predicted: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error on the rows where `true` is not NaN."""
    present = ~np.isnan(true)
    return float(np.sqrt(np.mean((predicted[present] - true[present]) ** 2))) if present.any() else float("nan")


def ccc(predicted: np.ndarray, true: np.ndarray) -> float:
    """Lin's concordance correlation on the rows where `true` is not NaN (NaN with fewer than two)."""
    present = ~np.isnan(true)
    if present.sum() < MIN_CCC_ROWS:
        return float("nan")
    p, t = predicted[present], true[present]
    denominator = p.var() + t.var() + (p.mean() - t.mean()) ** 2
    return float(2 * np.mean((p - p.mean()) * (t - t.mean())) / denominator) if denominator > 0 else float("nan")


def present_interval(metric, predicted: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """The bootstrap interval of `metric` over the rows where `true` is not NaN (NaN with too few)."""
    present = ~np.isnan(true)
    if present.sum() < MIN_CCC_ROWS:
        return float("nan"), float("nan")
    return bootstrap_interval(metric, predicted[present], true[present])


def target_scores(predicted: np.ndarray, true: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per target: RMSE and CCC with their bootstrap intervals, and the count of non-missing rows."""
    scores = {}
    for column, name in enumerate(names):
        p, t = predicted[:, column], true[:, column]
        scores[name] = {
            "rmse": rmse(p, t),
            "rmse_ci": list(present_interval(rmse, p, t)),
            "ccc": ccc(p, t),
            "ccc_ci": list(present_interval(ccc, p, t)),
            "n": int((~np.isnan(t)).sum()),
        }
    return scores


def mean_ccc(predicted: np.ndarray, true: np.ndarray) -> float:
    """CCC averaged over the targets (columns), for a one-number log line."""
    values = [ccc(predicted[:, column], true[:, column]) for column in range(true.shape[1])]
    return float(np.nanmean(values)) if values and not np.isnan(values).all() else float("nan")
