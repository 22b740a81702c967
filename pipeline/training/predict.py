"""Batched prediction over test-time views: what scoring, `oof@` and the report run on a trained model."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.training.augment import Normalizer, apply_view
from pipeline.training.models import autocast
from pipeline.training.target_loss import split_outputs


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    normalize: Normalizer,
    config: TrainConfig,
    views: tuple[dict, ...],
    num_classes: int | None = None,
    multi_label: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities float32 N×classes, target values float32 N×targets), each averaged over the
    test-time views. `num_classes`: the model's outputs after it are targets; None: every output is a class.
    `multi_label`: each class's probability on its own (sigmoid), rather than one distribution (softmax)."""
    activation = torch.sigmoid if multi_label else (lambda logits: torch.softmax(logits, dim=1))
    model.eval()
    probs, values = [], []
    for start in range(0, len(images), config.eval_batch_size):
        x = normalize(
            torch.from_numpy(np.array(images[start : start + config.eval_batch_size]))
        )  # copy: may be a read-only memmap
        with autocast(normalize.device, config.precision):
            outputs = [model(apply_view(x, view)).float() for view in views]
        split = [split_outputs(out, out.shape[1] if num_classes is None else num_classes) for out in outputs]
        probs.append((sum(activation(logits) for logits, _ in split) / len(views)).cpu())
        values.append((sum(v for _, v in split) / len(views)).cpu())
    return torch.cat(probs).numpy(), torch.cat(values).numpy()
