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


def cross_fitted_blend(probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int) -> np.ndarray:
    """OOF blend where each fold's rows use weights fitted on the other folds only."""
    out = np.zeros_like(probs[0])
    for fold in np.unique(folds):
        rest, held = folds != fold, folds == fold
        weights = greedy_weights([p[rest] for p in probs], labels[rest], max_steps)
        out[held] = blend([p[held] for p in probs], weights)
    return out
