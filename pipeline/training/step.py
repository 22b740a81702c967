"""One optimisation step on a uint8 batch, and the one step timer the speed probe and the time budget share."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from pipeline.config import TrainConfig
from pipeline.training.augment import Normalizer
from pipeline.training.batch_augment import BatchAugment
from pipeline.training.class_balance import class_loss, multi_label_loss
from pipeline.training.distill_loss import distilled_loss
from pipeline.training.models import autocast
from pipeline.training.target_loss import mix_targets, split_outputs, weighted_target_loss

# The lr warms up from, and the cosine decays to, this fraction of train.lr: low enough to start
# gently and end settled, above 0 so the last epochs still learn.
LR_FLOOR_FRACTION = 0.01


class BatchMixup(Mixup):
    """timm's Mixup in its batch mode, keeping the last batch's mixing weight so that the regression
    targets are mixed exactly as the images and class targets were."""

    last_lam = 1.0

    def _mix_batch(self, x: torch.Tensor) -> float:
        self.last_lam = super()._mix_batch(x)
        return self.last_lam


class TrainStep:
    """One optimisation step on a uint8 batch: normalise (augmenting first under augment_on: batch), mix, forward,
    backward, update.

    The loss is cross-entropy on the class outputs (weighted or logit-adjusted under `class_balance`, from the
    training images' `class_counts`: pipeline/training/class_balance.py; binary cross-entropy per class for
    `multi_label` labels, `images` being how many the counts are of) plus, when the model has target outputs
    (`num_targets`, see pipeline/training/target_loss.py), each target's λ (`target_weights`; default
    `target_loss_weight` for all) times the target loss on the values
    present. Under mixup/cutmix the targets are mixed with the images' weight; a value mixed with a
    missing one is missing.
    `distill` (temperature, label weight): a student's step, whose targets end with its teachers' class
    probabilities; the class loss is then pipeline/training/distill_loss.py's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        normalize: Normalizer,
        num_classes: int,
        steps_per_epoch: int,
        num_targets: int = 0,
        seed: int | None = None,
        class_counts: np.ndarray | None = None,
        multi_label: bool = False,
        images: int = 0,
        target_weights: tuple[float, ...] | None = None,
        distill: tuple[float, float] | None = None,
    ):
        self.model, self.config, self.normalize = model, config, normalize
        self.distill = distill
        self.num_classes, self.num_targets = num_classes, num_targets
        self.target_weights = target_weights or (config.target_loss_weight,) * num_targets
        self.device = normalize.device
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = create_optimizer_v2(
            model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay, layer_decay=config.layer_decay
        )
        self.scheduler = self._cosine_schedule(config.epochs)
        self.mixup = None
        if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
            self.mixup = BatchMixup(
                mixup_alpha=config.mixup_alpha,
                cutmix_alpha=config.cutmix_alpha,
                label_smoothing=config.label_smoothing,
                num_classes=num_classes,
                multi_label=multi_label,
            )
        self.multi_label = multi_label
        self.loss_fn = (
            multi_label_loss(config, class_counts, images, self.device)
            if multi_label
            else class_loss(config, class_counts, self.device)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay else None
        self.augment = (
            BatchAugment(config.augment, config.augment_strength, config.seed if seed is None else seed, self.device)
            if config.augment_on == "batch"
            else None
        )
        self.updates = 0
        self.epochs = config.epochs
        self.image_scale = 1.0  # below 1 in the epochs that train on smaller images (progressive resizing)

    def _cosine_schedule(self, epochs: int):
        config = self.config
        scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched="cosine",
            num_epochs=epochs,
            warmup_epochs=config.warmup_epochs,
            warmup_lr=config.lr * LR_FLOOR_FRACTION,
            min_lr=config.lr * LR_FLOOR_FRACTION,
            step_on_epochs=False,
            updates_per_epoch=self.steps_per_epoch,
        )
        return scheduler

    def set_epoch(self, epoch: int) -> None:
        """Before each epoch: batched augmentations draw from (seed, epoch), as the loader's batches do;
        the first epochs of a progressive run train on smaller images, the first `freeze_epochs` the classifier
        alone."""
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        freeze_backbone(self.model, epoch <= self.config.freeze_epochs)
        low_res = epoch <= low_res_epochs(self.config.low_res_fraction, self.epochs)
        self.image_scale = self.config.low_res_scale if low_res else 1.0

    def set_epochs(self, epochs: int) -> None:
        """Fit the cosine schedule to `epochs` in all, from the current update on."""
        self.epochs = epochs
        self.scheduler = self._cosine_schedule(epochs)
        self.scheduler.step_update(self.updates)

    def _shrink(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        size = (max(1, round(height * self.image_scale)), max(1, round(width * self.image_scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x.contiguous(memory_format=torch.channels_last) if self.normalize.channels_last else x

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        x = self.normalize(images, self.augment)
        if self.image_scale != 1.0:
            x = self._shrink(x)
        y = labels.to(self.device, non_blocking=True)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        teacher_probs = None
        if self.distill is not None:
            targets = targets.to(self.device, non_blocking=True)
            teacher_probs, targets = targets[:, -self.num_classes :], targets[:, : -self.num_classes]
        with autocast(self.device, self.config.precision):
            logits, values = split_outputs(self.model(x), self.num_classes)
            if teacher_probs is not None:
                loss = distilled_loss(logits, y, teacher_probs, self.loss_fn, *self.distill)
            elif self.multi_label and self.mixup:
                loss = self.loss_fn(logits, y, smoothed=True)
            else:
                loss = self.loss_fn(logits, y)
        if self.num_targets and targets is not None:
            targets = targets.to(self.device, non_blocking=True)
            if self.mixup is not None:
                targets = mix_targets(targets, self.mixup.last_lam)
            loss = loss + weighted_target_loss(values, targets, self.target_weights, self.config.target_loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.updates += 1
        self.scheduler.step_update(self.updates)
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)
        return loss.detach()

    def state_dict(self) -> dict:
        """Everything the step carries from one update to the next: weights, optimizer, scaler, EMA, count."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "updates": self.updates,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            generator = getattr(self.ema, "_sr_generator", None)  # timm's private RNG for bf16 EMA rounding
            if generator is not None:
                state["ema_generator"] = generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            if "ema_generator" in state:
                self.ema._sr_generator.set_state(state["ema_generator"])
        self.updates = state["updates"]
        self.scheduler.step_update(self.updates)  # the lr follows the update count

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def freeze_backbone(model: torch.nn.Module, frozen: bool) -> None:
    """Every weight but the classifier's (class and target outputs) frozen, or all trainable again. A frozen
    weight gets no gradient, so the optimizer leaves it (and its moments) untouched; batch-norm statistics still
    follow the new data, as in fastai's head-first fine-tuning."""
    head = {id(weight) for weight in model.get_classifier().parameters()}
    for weight in model.parameters():
        weight.requires_grad_(not frozen or id(weight) in head)


def low_res_epochs(fraction: float, total: int) -> int:
    """How many epochs at the start of a `total`-epoch run train on smaller images: `fraction` of them,
    rounded down (so they stay clear of the weight average's last epochs when the two fractions sum to at
    most 1), at least 1 (so the first epoch is on smaller images whenever the run has two or more: the
    first-epoch re-plan, which changes the total, cannot change its size) and never the last (the kept
    weights train at the size they are scored at)."""
    if fraction == 0 or total < 2:
        return 0
    return min(total - 1, max(1, math.floor(fraction * total)))


def seed_everything(seed: int) -> None:
    """Seed the generators that model initialisation and timm's mixup draw from."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def time_steps(step: TrainStep, batches: Iterator[tuple], warmup: int, timed: int) -> tuple[float, bool]:
    """(mean seconds of a step, whether every loss stayed finite) over `timed` steps after `warmup` untimed
    ones, which pay for memory allocation, kernel selection and the loader's start."""
    total = torch.zeros((), device=step.device)
    for _ in range(warmup):
        total = total + step(*next(batches)).float()
    float(total)  # waits for the device to finish the warm-up
    started = time.perf_counter()
    for _ in range(timed):
        total = total + step(*next(batches)).float()
    finite = math.isfinite(float(total))  # float(): waits for the device, so the time is right
    return (time.perf_counter() - started) / timed, finite
