"""Scores shared by training, OOF scoring and the ensemble (numpy only)."""

from __future__ import annotations

import numpy as np


def log_loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    return loss, float((probs.argmax(axis=1) == labels).mean())
