"""Cross-fitting: each fold's OOF rows transformed by what was fitted on the other folds only, so a figure scored on
them is not flattered by a fit to the rows it scores (the blend's temperature, ordinal cuts, multi-label thresholds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def cross_fitted(
    values: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    fit: Callable[[np.ndarray, np.ndarray], Any],
    apply: Callable[[np.ndarray, Any], np.ndarray],
) -> np.ndarray:
    """Per fold, `apply(held-out values, fit(other folds' values, their labels))`, in the rows' order."""
    out = None
    for fold in np.unique(folds):
        held = folds == fold
        result = apply(values[held], fit(values[~held], labels[~held]))
        if out is None:
            out = np.empty((len(values), *result.shape[1:]), result.dtype)
        out[held] = result
    return out
