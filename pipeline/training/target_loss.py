"""Regression targets beside the expression class (valence, arousal), on the training side: the
model's output split, the loss and the mixing of targets under mixup.

A model trained on data with targets has `classes + targets` outputs: the class logits first, then
one raw output per target, squashed by tanh into the targets' range [-1, 1]. Every consumer splits
the outputs with :func:`split_outputs`, so the layout lives here only.

Missing values are NaN. The loss ignores them (an image without targets still trains the classifier)
and a batch with no target value at all contributes 0. Scores live in pipeline/evaluation/affect.py.
"""

from __future__ import annotations

import torch

from pipeline.config import TARGET_LOSSES, TrainConfig
from pipeline.evaluation.affect import MIN_CCC_ROWS
from pipeline.evaluation.ordinal import GRADE


def split_outputs(outputs: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits N×classes, target values N×targets in [-1, 1]) of a model's raw outputs."""
    return outputs[:, :num_classes], torch.tanh(outputs[:, num_classes:])


def target_weights(config: TrainConfig, names: list[str]) -> tuple[float, ...]:
    """λ of each target: train.grade_loss_weight for the grade of an ordinal metric, train.target_loss_weight else."""
    return tuple(config.grade_loss_weight if name == GRADE else config.target_loss_weight for name in names)


def weighted_target_loss(
    values: torch.Tensor, targets: torch.Tensor, weights: tuple[float, ...], kind: str
) -> torch.Tensor:
    """Σ over the distinct weights λ of λ · the target loss of the targets weighted λ (one group, one call, when all
    targets weigh alike: the loss of valence and arousal together, as it always was)."""
    loss = values.new_zeros(())
    for weight in dict.fromkeys(weights):
        columns = [i for i, w in enumerate(weights) if w == weight]
        loss = loss + weight * target_loss(values[:, columns], targets[:, columns], kind)
    return loss


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


def mix_targets(targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Targets of a batch mixed as timm's batch-mode mixup/cutmix mixes its images: each row with the
    row mirrored across the batch, weight `lam`. A row mixed with a missing value becomes missing."""
    if lam == 1.0:
        return targets
    return lam * targets + (1 - lam) * targets.flip(0)
