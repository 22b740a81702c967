"""Blend weights over several models' probabilities, fitted on OOF predictions (numpy only).

Greedy forward selection with replacement (Caruana et al., 2004): add, one at a time, the model
whose inclusion lowers the OOF log-loss most; stop when none does.
"""

from __future__ import annotations

import numpy as np

from pipeline.metrics import log_loss_and_accuracy


def greedy_weights(probs: list[np.ndarray], labels: np.ndarray, max_steps: int) -> np.ndarray:
    """Blend weights (summing to one) by greedy forward selection with replacement."""
    counts = np.zeros(len(probs))
    total = np.zeros_like(probs[0])
    best_loss = np.inf
    for step in range(1, max_steps + 1):
        losses = [log_loss_and_accuracy((total + p) / step, labels)[0] for p in probs]
        pick = int(np.argmin(losses))
        if losses[pick] >= best_loss:
            break
        best_loss = losses[pick]
        counts[pick] += 1
        total += probs[pick]
    return counts / counts.sum()


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs))


def fold_weights(probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int) -> dict[int, np.ndarray]:
    """Per fold, the blend weights fitted on the other folds only."""
    return {fold: greedy_weights([p[folds != fold] for p in probs], labels[folds != fold], max_steps) for fold in np.unique(folds)}


def blend_by_fold(arrays: list[np.ndarray], folds: np.ndarray, weights_of: dict[int, np.ndarray]) -> np.ndarray:
    """Each fold's rows of the models' `arrays` (probabilities or target values) blended with that fold's weights."""
    out = np.zeros_like(arrays[0])
    for fold, weights in weights_of.items():
        held = folds == fold
        out[held] = blend([a[held] for a in arrays], weights)
    return out


def cross_fitted_blend(probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int) -> np.ndarray:
    """OOF blend where each fold's rows use weights fitted on the other folds only."""
    return blend_by_fold(probs, folds, fold_weights(probs, labels, folds, max_steps))
