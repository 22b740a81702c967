"""Regression targets beside the expression class (valence, arousal): the model's output split,
the training loss and the scores.

A model trained on data with targets has `classes + targets` outputs: the class logits first, then
one raw output per target, squashed by tanh into the targets' range [-1, 1]. Every consumer splits
the outputs with :func:`split_outputs`, so the layout lives here only.

Missing values are NaN. The loss ignores them (an image without targets still trains the classifier)
and a batch with no target value at all contributes 0. Scores are computed on the non-missing rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pipeline.config import TARGET_LOSSES

MISSING_MARK = -2.0  # how AffectNet-style tables write a missing valence or arousal
VALUE_RANGE = (-1.0, 1.0)
CONFIDENCE = 0.95  # width of the bootstrap intervals
BOOTSTRAP_SAMPLES = 1000
MIN_CCC_ROWS = 2  # a concordance needs two values to have a variance


def split_outputs(outputs: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits N×classes, target values N×targets in [-1, 1]) of a model's raw outputs."""
    return outputs[:, :num_classes], torch.tanh(outputs[:, num_classes:])


def target_loss(values: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss of predicted `values` against `targets` (N×T, NaN = missing), as `kind` names it."""
    if kind not in TARGET_LOSSES:
        raise ValueError(f"target loss {kind!r} is not one of {list(TARGET_LOSSES)}")
    values = values.float()
    present = ~torch.isnan(targets)
    # Zero-filled rather than multiplied out: NaN·0 is NaN, and would reach the gradients.
    filled = torch.where(present, targets, torch.zeros_like(targets)).to(values.dtype)
    weights = present.to(values.dtype)
    loss = values.new_zeros(())
    if "mse" in kind:
        loss = loss + masked_mse(values, filled, weights)
    if "ccc" in kind:
        loss = loss + masked_ccc_loss(values, filled, weights)
    return loss


def masked_mse(values: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries whose weight is 1; 0 when there are none."""
    count = weights.sum()
    return (weights * (values - targets) ** 2).sum() / count.clamp(min=1)


def masked_ccc_loss(values: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """1 - concordance correlation, per target on its present rows, averaged over the targets that have
    enough rows; 0 when none has."""
    counts = weights.sum(dim=0)
    usable = counts >= MIN_CCC_ROWS
    if not usable.any():
        return values.new_zeros(())
    n = counts.clamp(min=1)
    mean_v = (weights * values).sum(0) / n
    mean_t = (weights * targets).sum(0) / n
    var_v = (weights * (values - mean_v) ** 2).sum(0) / n
    var_t = (weights * (targets - mean_t) ** 2).sum(0) / n
    covariance = (weights * (values - mean_v) * (targets - mean_t)).sum(0) / n
    concordance = 2 * covariance / (var_v + var_t + (mean_v - mean_t) ** 2 + torch.finfo(values.dtype).eps)
    return (1 - concordance)[usable].mean()


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


Metric = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_interval(metric: Metric, predicted: np.ndarray, true: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (CONFIDENCE) of `metric` over the non-missing rows, resampled with a fixed seed."""
    present = ~np.isnan(true)
    p, t = predicted[present], true[present]
    if len(t) < MIN_CCC_ROWS:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # One resample at a time: all of them at once would hold samples×rows indices in memory.
    draws = np.array([metric(p[rows], t[rows]) for rows in (rng.integers(0, len(t), len(t)) for _ in range(samples))])
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.nanpercentile(draws, tail)), float(np.nanpercentile(draws, 100 - tail))


def target_scores(predicted: np.ndarray, true: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per target: RMSE and CCC with their bootstrap intervals, and the count of non-missing rows."""
    scores = {}
    for column, name in enumerate(names):
        p, t = predicted[:, column], true[:, column]
        scores[name] = {"rmse": rmse(p, t), "rmse_ci": list(bootstrap_interval(rmse, p, t)),
                        "ccc": ccc(p, t), "ccc_ci": list(bootstrap_interval(ccc, p, t)),
                        "n": int((~np.isnan(t)).sum())}
    return scores


def mean_ccc(predicted: np.ndarray, true: np.ndarray) -> float:
    """CCC averaged over the targets (columns), for a one-number log line."""
    values = [ccc(predicted[:, column], true[:, column]) for column in range(true.shape[1])]
    return float(np.nanmean(values)) if values and not np.isnan(values).all() else float("nan")


def mix_targets(targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Targets of a batch mixed as timm's batch-mode mixup/cutmix mixes its images: each row with the
    row mirrored across the batch, weight `lam`. A row mixed with a missing value becomes missing."""
    if lam == 1.0:
        return targets
    return lam * targets + (1 - lam) * targets.flip(0)
