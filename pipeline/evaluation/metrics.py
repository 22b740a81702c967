"""Scores shared by training, OOF scoring, the ensemble and the report (numpy only)."""

from __future__ import annotations

import numpy as np


def log_loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    return loss, float((probs.argmax(axis=1) == labels).mean())


def score(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, classes: list[str]) -> dict:
    """Accuracy overall, per fold and per class (recall), and log-loss."""
    pred = probs.argmax(axis=1)
    correct = pred == labels
    return {
        "accuracy": float(correct.mean()),
        "log_loss": log_loss_and_accuracy(probs, labels)[0],
        "per_fold": {str(f): float(correct[folds == f].mean()) for f in np.unique(folds)},
        "per_class": {
            name: float(correct[labels == i].mean()) if (labels == i).any() else None for i, name in enumerate(classes)
        },
        "n": int(len(labels)),
    }
