"""The time budget: how many epochs of a run fit in its share of `train.time_budget_minutes`."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline.config import TrainConfig
from pipeline.data import Prepared
from pipeline.training import resume
from pipeline.training.augment import Normalizer, make_train_loader, plain_view
from pipeline.training.models import model_on
from pipeline.training.predict import predict
from pipeline.training.step import TrainStep, low_res_epochs, time_steps

log = logging.getLogger(__name__)

# The time budget's probe (plan_epochs): steps run untimed first, because the first ones pay for memory
# allocation, kernel selection and the loader's start; then steps timed, enough to average out one slow
# step and few enough that the probe costs seconds where an epoch costs minutes.
PROBE_WARMUP_STEPS = 3
PROBE_TIMED_STEPS = 10
# Eval batches timed after one untimed batch: eval batches are large, two already average over hundreds of images.
PROBE_EVAL_BATCHES = 2


@dataclass(frozen=True)
class EpochPlan:
    """The epochs one run trains under `train.time_budget_minutes`, and the measurements they came from."""

    epochs: int
    # Training (the run's mean, when its first epochs train on smaller images) plus the epoch's share of the validation
    # scoring.
    seconds_per_epoch: float
    predict_seconds: float  # the kept model's plain predictions of its validation fold (test-time views are oof@'s)
    budget_seconds: float  # this run's share of the backbone's budget
    scoring_seconds_per_epoch: float = 0.0  # the validation scoring's share of seconds_per_epoch
    probe_seconds_per_epoch: float | None = None  # what the probe measured, when the first epoch re-planned
    low_res_time_ratio: float = (
        1.0  # a step on the smaller images over a full-size one, as the probe timed them (train.low_res_fraction)
    )

    def first_epoch_time_factor(self, low_res_fraction: float) -> float:
        """The first epoch's training time over a full-size epoch's: the probe's ratio when it trains on smaller
        images."""
        return self.low_res_time_ratio if low_res_epochs(low_res_fraction, self.epochs) >= 1 else 1.0


def budget_plan(
    budget_seconds: float,
    spent_seconds: float,
    seconds_per_epoch: float,
    predict_seconds: float,
    max_epochs: int,
    label: str = "",
) -> EpochPlan:
    """The epochs that fit in the budget left after the probe (`spent_seconds`) and the final predictions:
    at most `max_epochs` (train.epochs), at least 1, with a warning when not even 1 fits."""
    fitting = math.floor((budget_seconds - spent_seconds - predict_seconds) / seconds_per_epoch)
    if fitting < 1:
        log.warning(
            "%s: the time budget of %.0f s for this run (train.time_budget_minutes / K folds) does not fit one "
            "epoch: %.1f s per epoch measured, %.0f s to predict; training 1 epoch over budget. Raise "
            "time_budget_minutes (train or backbones.<name>), or choose a smaller model, input_size or data",
            label or "training",
            budget_seconds,
            seconds_per_epoch,
            predict_seconds,
        )
    return EpochPlan(max(1, min(max_epochs, fitting)), seconds_per_epoch, predict_seconds, budget_seconds)


def mean_train_seconds(full_size_seconds: float, low_res_fraction: float, low_res_time_ratio: float) -> float:
    """An epoch's training time averaged over a run whose first `low_res_fraction` of the epochs train on
    smaller images, each step `low_res_time_ratio` times a full-size one."""
    return full_size_seconds * (1 - low_res_fraction * (1 - low_res_time_ratio))


def replan_after_first_epoch(
    plan: EpochPlan,
    first_epoch_train_seconds: float,
    spent_seconds: float,
    max_epochs: int,
    label: str = "",
    low_res_fraction: float = 0.0,
) -> EpochPlan:
    """The plan again from the first real epoch, a longer and truer measurement than the probe's few steps
    (a probe right after other work timed 65 s an epoch that then took 55): the first epoch plus those
    that fit in the budget left after `spent_seconds` (probe and first epoch) and the final predictions.
    A first epoch on smaller images (`low_res_fraction`) stands for a full-size one by the probe's ratio."""
    full_size_seconds = first_epoch_train_seconds / plan.first_epoch_time_factor(low_res_fraction)
    seconds_per_epoch = (
        mean_train_seconds(full_size_seconds, low_res_fraction, plan.low_res_time_ratio)
        + plan.scoring_seconds_per_epoch
    )
    # The first epoch is among the epochs planned, so it is not counted as spent.
    replanned = budget_plan(
        plan.budget_seconds,
        spent_seconds - seconds_per_epoch,
        seconds_per_epoch,
        plan.predict_seconds,
        max_epochs,
        label,
    )
    return replace(
        replanned,
        scoring_seconds_per_epoch=plan.scoring_seconds_per_epoch,
        probe_seconds_per_epoch=plan.seconds_per_epoch,
        low_res_time_ratio=plan.low_res_time_ratio,
    )


def plan_epochs(
    data: Prepared,
    train_index: np.ndarray,
    valid_index: np.ndarray,
    config: TrainConfig,
    normalize: Normalizer,
    budget_seconds: float,
    label: str = "",
    extra_images: int = 0,
) -> EpochPlan:
    """The epochs of `config` that fit in `budget_seconds`, from the speed of a throw-away model of the same
    settings on the same images: training steps, and forward passes of eval batches.

    It draws from the global generators, so call it before the real run is seeded. `extra_images`: trained on
    besides `train_index` each epoch (a student's test images), timed as train images.
    """
    started = time.perf_counter()
    num_classes = len(data.classes)
    model = model_on(config, data.channels, num_classes + len(data.target_names), normalize.device)
    model.train()
    batches_per_epoch = (len(train_index) + extra_images) // config.batch_size
    warmup = min(PROBE_WARMUP_STEPS, batches_per_epoch - 1)
    timed = min(PROBE_TIMED_STEPS, batches_per_epoch - warmup)
    probe_index = train_index[: (warmup + timed) * config.batch_size]  # only the images the probe trains on are read
    targets = None if data.train_targets is None else data.train_targets[probe_index]
    loader = make_train_loader(
        data.train_images[probe_index],
        data.train_labels[probe_index],
        config,
        seed=config.seed,
        targets=targets,
        device=normalize.device,
    )
    step = TrainStep(
        model,
        config,
        normalize,
        num_classes,
        steps_per_epoch=batches_per_epoch,
        num_targets=0 if targets is None else targets.shape[1],
        multi_label=data.multi_label,
    )
    step_seconds, _ = time_steps(step, iter(loader), warmup, timed)
    low_res_time_ratio = 1.0
    if config.low_res_fraction > 0:
        step.image_scale = config.low_res_scale
        low_res_time_ratio = time_steps(step, iter(loader), warmup, timed)[0] / step_seconds
    del loader

    eval_images = data.train_images[valid_index[: PROBE_EVAL_BATCHES * config.eval_batch_size]]
    predict(
        step.eval_model,
        eval_images[: config.eval_batch_size],
        normalize,
        config,
        (plain_view(config.augment),),
        num_classes,
    )  # untimed
    timing = time.perf_counter()
    predict(step.eval_model, eval_images, normalize, config, (plain_view(config.augment),), num_classes)
    image_seconds = (time.perf_counter() - timing) / len(eval_images)

    n_val = len(valid_index)
    scoring_seconds_per_epoch = n_val * image_seconds / config.eval_every
    train_seconds = mean_train_seconds(batches_per_epoch * step_seconds, config.low_res_fraction, low_res_time_ratio)
    seconds_per_epoch = train_seconds + scoring_seconds_per_epoch
    predict_seconds = n_val * image_seconds
    plan = budget_plan(
        budget_seconds, time.perf_counter() - started, seconds_per_epoch, predict_seconds, config.epochs, label
    )
    return replace(plan, scoring_seconds_per_epoch=scoring_seconds_per_epoch, low_res_time_ratio=low_res_time_ratio)


def stored_or_new_plan(
    data: Prepared,
    fold_of: np.ndarray,
    train_index: np.ndarray,
    valid_index: np.ndarray,
    config: TrainConfig,
    normalize: Normalizer,
    label: str,
    checkpoint: resume.Checkpoint | None,
    extra_images: int = 0,
) -> EpochPlan:
    """The plan stored beside the run's checkpoint when it resumes (measuring again could give other epochs
    and so another lr schedule than the one its saved state follows); else measured now, and stored."""
    stored = resume.load_plan(checkpoint) if checkpoint is not None else None
    if stored is not None:
        plan = EpochPlan(**stored)
    else:
        budget_seconds = config.time_budget_minutes * 60 / len(np.unique(fold_of))
        plan = plan_epochs(data, train_index, valid_index, config, normalize, budget_seconds, label, extra_images)
        if checkpoint is not None:
            resume.save_plan(checkpoint, asdict(plan))
    log.info(
        "%s: budget %.0f s → %d epochs (%.1f s/epoch measured, %.0f s to predict)%s",
        label or "training",
        plan.budget_seconds,
        plan.epochs,
        plan.seconds_per_epoch,
        plan.predict_seconds,
        ", the plan stored before the interruption" if stored is not None else "",
    )
    return plan
