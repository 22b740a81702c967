"""Class imbalance (`train.class_balance`): what the loss and the batches do about classes of very different sizes.

- `weights`: each image's loss weighted by its class's inverse frequency (scikit-learn's "balanced":
  n / (classes × count)), so every class weighs alike in the gradient.
- `sampler`: batches drawn with replacement, each image with a probability inversely proportional to its
  class's size: every class is seen equally often, the rare ones repeated.
- `logit_adjustment` (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021): the loss sees
  the logits plus the log of the class priors, so the model's own logits learn to rank classes as if they
  were balanced, which balanced accuracy and macro-F1 reward and plain accuracy may not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


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
    per_class = inverse_frequency_weights(class_counts(labels, num_classes))[labels]
    return per_class / per_class.sum()


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


def class_loss(config: TrainConfig, counts: np.ndarray | None, device: torch.device) -> ClassBalancedCrossEntropy:
    """The loss on the class outputs under `config.class_balance`; `counts` of the training images per class
    (None: not known, as in a speed probe, where the loss's cost is what matters, not its weights)."""
    weight = shift = None
    if counts is not None and config.class_balance == "weights":
        weight = torch.tensor(inverse_frequency_weights(counts), dtype=torch.float32)
    if counts is not None and config.class_balance == "logit_adjustment":
        shift = torch.tensor(log_priors(counts), dtype=torch.float32)
    return ClassBalancedCrossEntropy(config.label_smoothing, weight, shift).to(device)
