"""The student's loss: its labels and its teachers' probabilities, softened (Hinton et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch's ignore_index: a test image trained on has no label, only the teachers' probabilities.
NO_LABEL = -100


def distilled_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_probs: torch.Tensor,
    label_loss: torch.nn.Module,
    temperature: float,
    label_weight: float,
) -> torch.Tensor:
    """α · `label_loss` on the images with a label + (1 − α) · T² · KL(teachers ‖ student), both softened by T
    (T² keeps the term's gradients the size of the label term's as T changes)."""
    soft_teacher = F.log_softmax(teacher_probs.float().clamp_min(1e-8).log() / temperature, dim=-1)
    soft_student = F.log_softmax(logits.float() / temperature, dim=-1)
    divergence = (soft_teacher.exp() * (soft_teacher - soft_student)).sum(dim=-1).mean()
    loss = (1 - label_weight) * temperature**2 * divergence
    labelled = labels != NO_LABEL
    if label_weight > 0 and bool(labelled.any()):
        loss = loss + label_weight * label_loss(logits[labelled], labels[labelled])
    return loss
