"""Percentile bootstrap intervals: the one resampling behind every interval the reports give."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONFIDENCE = 0.95  # width of the intervals
SAMPLES = 1000
# Resamples drawn at once: vectorised draws, with memory bounded by CHUNK × rows indices.
CHUNK = 100


def bootstrap_interval(
    statistic: Callable[..., float], *columns: np.ndarray, samples: int = SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The CONFIDENCE percentile interval of `statistic(*columns)` over row resamples (fixed seed)."""
    rows = len(columns[0])
    rng = np.random.default_rng(seed)
    draws = [
        statistic(*(column[index] for column in columns))
        for start in range(0, samples, CHUNK)
        for index in rng.integers(0, rows, size=(min(CHUNK, samples - start), rows))
    ]
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.nanpercentile(draws, tail)), float(np.nanpercentile(draws, 100 - tail))
