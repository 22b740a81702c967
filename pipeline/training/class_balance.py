"""Class imbalance (`train.class_balance`): what the loss and the batches do about classes of very different sizes.

- `weights`: each image's loss weighted by its class's inverse frequency (scikit-learn's "balanced":
  n / (classes × count)), so every class weighs alike in the gradient.
- `sampler`: batches drawn with replacement, each image with a probability inversely proportional to its
  class's size: every class is seen equally often, the rare ones repeated.
- `logit_adjustment` (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021): the loss sees
  the logits plus the log of the class priors, so the model's own logits learn to rank classes as if they
  were balanced, which balanced accuracy and macro-F1 reward and plain accuracy may not.

Multi-label data (labels N×classes of 0/1) trains each class as its own yes/no by binary cross-entropy
(:class:`MultiLabelLoss`); `weights` then weighs each class's positives by its negatives per positive,
`logit_adjustment` adds each class's prior log-odds, and `sampler` draws an image by its rarest class.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class (multi-label: images that have the class); images without a label (a student's test images,
    pipeline/training/distill_loss.py) are not counted."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels[labels >= 0], minlength=num_classes)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """n / (classes × count) per class; a class without images weighs nothing."""
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def log_priors(counts: np.ndarray) -> np.ndarray:
    """Log of each class's share of the images; a class without images counts as half an image."""
    return np.log(np.maximum(counts, 0.5) / counts.sum())


def balanced_sampling(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per image, the probability of drawing it such that every class is drawn equally often."""
    weights = inverse_frequency_weights(class_counts(labels, num_classes))
    per_image = (labels * weights).max(axis=1) if labels.ndim == 2 else weights[labels]
    per_image = np.where(per_image > 0, per_image, weights[weights > 0].min())  # an image without a class: as common
    return per_image / per_image.sum()


class ClassBalancedCrossEntropy(torch.nn.Module):
    """Cross-entropy on class indices (with label smoothing) or on soft targets (mixup, cutmix: smoothing already
    in them), with optional per-class weights and an optional shift added to the logits."""

    def __init__(self, label_smoothing: float, weight: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)
        self.register_buffer("shift", shift)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            logits = logits + self.shift
        if target.dim() == 1:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)
        per_class = -target * F.log_softmax(logits, dim=-1)
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(dim=-1).mean()


class MultiLabelLoss(torch.nn.Module):
    """Binary cross-entropy per class on 0/1 (or mixed) targets, label smoothing pulling them toward 1/2, with an
    optional weight on each class's positives and an optional shift added to the logits."""

    def __init__(self, label_smoothing: float, pos_weight: torch.Tensor | None, shift: torch.Tensor | None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", pos_weight)
        self.register_buffer("shift", shift)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, smoothed: bool = False) -> torch.Tensor:
        if self.shift is not None:
            logits = logits + self.shift
        target = target.to(logits.dtype)
        if not smoothed:
            target = target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=self.pos_weight)


def multi_label_loss(
    config: TrainConfig, counts: np.ndarray | None, images: int, device: torch.device
) -> MultiLabelLoss:
    """The loss of multi-label outputs under `config.class_balance`; `counts`: training images having each class."""
    pos_weight = shift = None
    if counts is not None and config.class_balance == "weights":
        pos_weight = torch.tensor((images - counts) / np.maximum(counts, 1), dtype=torch.float32).clamp(min=1)
    if counts is not None and config.class_balance == "logit_adjustment":
        prior = np.clip(counts / images, 0.5 / images, 1 - 0.5 / images)
        shift = torch.tensor(np.log(prior / (1 - prior)), dtype=torch.float32)
    return MultiLabelLoss(config.label_smoothing, pos_weight, shift).to(device)


def class_loss(config: TrainConfig, counts: np.ndarray | None, device: torch.device) -> ClassBalancedCrossEntropy:
    """The loss on the class outputs under `config.class_balance`; `counts` of the training images per class
    (None: not known, as in a speed probe, where the loss's cost is what matters, not its weights)."""
    weight = shift = None
    if counts is not None and config.class_balance == "weights":
        weight = torch.tensor(inverse_frequency_weights(counts), dtype=torch.float32)
    if counts is not None and config.class_balance == "logit_adjustment":
        shift = torch.tensor(log_priors(counts), dtype=torch.float32)
    return ClassBalancedCrossEntropy(config.label_smoothing, weight, shift).to(device)
