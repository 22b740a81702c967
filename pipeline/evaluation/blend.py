"""Blend weights over several models' probabilities, fitted on OOF predictions by the competition's metric.

Greedy forward selection with replacement (Caruana et al., 2004): add, one at a time, the model
whose inclusion scores the OOF blend best, for `max_steps` steps, and keep the best blend seen. Accuracy
and log-loss blends are scored by the tempered log-loss below (FITTED_BY_LOG_LOSS says why), which
under log-loss the ensemble then applies to what it submits; other metrics of the predicted class
(macro-F1, balanced accuracy, kappa) by the metric itself, ties broken by the tempered log-loss; a
metric that only ranks (ROC AUC) by itself, on the members' column ranks. Multi-label probabilities (each
class's own, not a distribution to temper) are fitted by their binary log-loss, thresholds being fitted
after the blend (pipeline/evaluation/thresholds.py), or by a ranking metric on ranks.

The tempered log-loss: log-loss after the one temperature that suits each candidate blend. Members trained
with label smoothing are under-confident, and an average of members that disagree is more so: on
raw log-loss that looks like a loss even where the average is the more accurate. FER-2013 fold 0,
face_vgg (flip) and a 9-epoch random-crop face_vgg (ten windows), weights cross-fitted on two
halves: raw log-loss kept face_vgg alone (0.6307), the tempered one blends them (0.6339).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata

from pipeline.evaluation.cross_fit import cross_fitted
from pipeline.evaluation.metrics import ACCURACY, Metric, log_loss

SHARPNESS_BOUNDS = (0.1, 10.0)  # the inverse temperature tried: from 10× softer to 10× sharper
# Metrics whose blend is fitted by tempered log-loss. Log-loss itself; and accuracy, which the most probable
# class of well-calibrated probabilities maximises, so a smooth proper score fits it with less noise than
# counting hits. On the synthetic default run's members (cross-fitted over 3 folds; hidden answers, 600 images):
# fitted by tempered log-loss 0.7885 OOF and 0.8100 on the answers, by accuracy 0.7878 and 0.7983. Metrics that
# weigh classes otherwise (macro-F1, balanced accuracy, kappa) are fitted on themselves.
FITTED_BY_LOG_LOSS = ("accuracy", "log_loss")


def _best_sharpness(probs: np.ndarray, labels: np.ndarray):
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(labels))

    def loss(sharpness: float) -> float:
        logits = log_probs * sharpness
        top = logits.max(axis=1)
        return float((np.log(np.exp(logits - top[:, None]).sum(axis=1)) + top - logits[rows, labels]).mean())

    return minimize_scalar(loss, bounds=SHARPNESS_BOUNDS, method="bounded")


def tempered_log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Log-loss of `probs` under the inverse temperature (in SHARPNESS_BOUNDS) that minimises it."""
    return float(_best_sharpness(probs, labels).fun)


def fit_sharpness(probs: np.ndarray, labels: np.ndarray) -> float:
    """The inverse temperature (in SHARPNESS_BOUNDS) under which `probs` have the least log-loss."""
    return float(_best_sharpness(probs, labels).x)


def sharpen(probs: np.ndarray, sharpness: float) -> np.ndarray:
    """`probs` to the power `sharpness`, rows rescaled to sum to one (a temperature of 1/sharpness)."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) * sharpness
    powered = np.exp(logits - logits.max(axis=1, keepdims=True))
    return powered / powered.sum(axis=1, keepdims=True)


def column_ranks(probs: np.ndarray) -> np.ndarray:
    """Each column's values as their rank among the rows, scaled to (0, 1]: what a ranking metric sees."""
    return rankdata(probs, axis=0) / len(probs)


def blend_loss(probs: np.ndarray, labels: np.ndarray, metric: Metric) -> tuple[float, ...]:
    """What the greedy selection minimises, compared in order."""
    if labels.ndim == 2 and metric.reads != "ranks":
        return (log_loss(probs, labels),)
    if metric.name in FITTED_BY_LOG_LOSS:
        return (tempered_log_loss(probs, labels),)
    if metric.reads == "ranks":
        return (metric.loss(metric(probs, labels)),)
    return metric.loss(metric(probs, labels)), tempered_log_loss(probs, labels)


def greedy_weights(
    probs: list[np.ndarray], labels: np.ndarray, max_steps: int, metric: Metric = ACCURACY
) -> np.ndarray:
    """Blend weights (summing to one) by greedy forward selection with replacement, by `metric`."""
    counts = np.zeros(len(probs))
    total = np.zeros_like(probs[0])
    best_loss, best_counts = (np.inf,), None
    for step in range(1, max_steps + 1):
        losses = [blend_loss((total + p) / step, labels, metric) for p in probs]
        pick = min(range(len(probs)), key=losses.__getitem__)
        counts[pick] += 1
        total += probs[pick]
        if losses[pick] < best_loss:
            best_loss, best_counts = losses[pick], counts.copy()
        if len(probs) == 1:
            break
    return best_counts / best_counts.sum()


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs))


def fold_weights(
    probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int, metric: Metric = ACCURACY
) -> dict[int, np.ndarray]:
    """Per fold, the blend weights fitted on the other folds only."""
    return {
        fold: greedy_weights([p[folds != fold] for p in probs], labels[folds != fold], max_steps, metric)
        for fold in np.unique(folds)
    }


def blend_by_fold(arrays: list[np.ndarray], folds: np.ndarray, weights_of: dict[int, np.ndarray]) -> np.ndarray:
    """Each fold's rows of the models' `arrays` (probabilities or target values) blended with that fold's weights."""
    out = np.zeros_like(arrays[0])
    for fold, weights in weights_of.items():
        held = folds == fold
        out[held] = blend([a[held] for a in arrays], weights)
    return out


def cross_fitted_blend(
    probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int, metric: Metric = ACCURACY
) -> np.ndarray:
    """OOF blend where each fold's rows use weights fitted on the other folds only."""
    return blend_by_fold(probs, folds, fold_weights(probs, labels, folds, max_steps, metric))


def cross_fitted_sharpening(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """OOF probabilities where each fold's rows are sharpened by the temperature fitted on the other folds only."""
    return cross_fitted(probs, labels, folds, fit_sharpness, sharpen)
