"""One fold's run: train on every other fold, predict the held-out one (train, tuning and benchmarks share it)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import TrainConfig
from pipeline.data import Prepared, Rows, Split
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import ACCURACY, Metric
from pipeline.training import resume
from pipeline.training.augment import Normalizer, plain_view
from pipeline.training.budget import (
    EpochPlan,
    low_res_epochs,
    mean_train_seconds,
    replan_after_first_epoch,
    stored_or_new_plan,
)
from pipeline.training.distillation import Teaching, taught_split
from pipeline.training.loop import EpochCallback, FitResult, check_enough_images, fit
from pipeline.training.models import model_on, pick_device
from pipeline.training.predict import predict
from pipeline.training.pretrained import resolve
from pipeline.training.speed import CACHE_NAME, DEFAULT_CACHE, resolve_speed_settings
from pipeline.training.step import seed_everything
from pipeline.training.target_loss import target_weights

log = logging.getLogger(__name__)


@dataclass
class FoldRun:
    fit: FitResult
    valid_index: np.ndarray
    oof_plain: np.ndarray  # the kept model's class probabilities of its validation fold, one plain view
    oof_plain_values: np.ndarray  # its target values (N×targets; N×0 when the data has none)
    seconds: float
    # The settings the run trained with, saved beside its model: `auto` precision and channels-last resolved;
    # `epochs` as given (under a time budget, `plan.epochs` were trained).
    config: TrainConfig
    plan: EpochPlan | None = None  # under a time budget: the epochs trained and the speed they were planned from


def fit_fold(
    data: Prepared,
    fold_of: np.ndarray,
    fold: int,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    label: str = "",
    checkpoint: resume.Checkpoint | None = None,
    metric: Metric = ACCURACY,
    teaching: Teaching | None = None,
) -> FoldRun:
    """Train on every fold but `fold`; predict `fold` in its plain view (test-time views are `oof@`'s, from the saved
    model).

    `metric`: the competition's, which the epoch log shows and `keep_epoch: best` keeps by.
    `checkpoint` (see :func:`fold_checkpoint`): resume from it and keep it up to date; None: no resume.
    With `config.time_budget_minutes`, the run trains the epochs `budget.plan_epochs` fits in its share
    of the budget (see :class:`EpochPlan`), planned again from its first epoch's time when the warm-up
    lasts an epoch or more, exactly as a run without a budget set to those epochs.
    `auto` precision and channels-last are resolved first (pipeline/training/speed.py), cached beside the
    checkpoint or, without one, in the default cache; the budget is planned with what they resolve to.
    `teaching`: a student's run (pipeline/training/distillation.py): it learns from its fold's teachers too, and
    from the test images when they are given.
    """
    started = time.perf_counter()
    device = pick_device()
    train_index, valid_index = fold_split(fold_of, fold)
    if len(valid_index) == 0:
        raise PipelineError(f"fold {fold} holds no images; folds present: {sorted(set(fold_of.tolist()))}")
    check_enough_images(len(train_index), config, label or f"fold {fold}")  # before a model is built for nothing
    num_classes = len(data.classes)
    # Before the budget's probe, which must time the settings that train, and before seeding: measuring draws.
    speed_cache = checkpoint.path.parent / CACHE_NAME if checkpoint is not None else DEFAULT_CACHE
    config = resolved = resolve_speed_settings(
        config, data.channels, num_classes + len(data.target_names), data.train_images.shape[1], device, speed_cache
    )
    normalize = Normalizer.of_model(config, data, device)
    plan, replan = None, None
    if config.time_budget_minutes is not None:
        extra = 0 if teaching is None else teaching.extra_images
        plan = stored_or_new_plan(data, fold_of, train_index, valid_index, config, normalize, label, checkpoint, extra)
        config = replace(config, epochs=plan.epochs)
        # The first epoch's lr does not depend on the total, so the total can still change after it; unless that
        # epoch trained the classifier alone (freeze_epochs), far faster than the epochs after it.
        if config.warmup_epochs >= 1 and not config.freeze_epochs:

            def replan(first_epoch_train_seconds: float) -> int:
                nonlocal plan
                probed = plan
                plan = replan_after_first_epoch(
                    probed,
                    first_epoch_train_seconds,
                    time.perf_counter() - started,
                    resolved.epochs,
                    label,
                    config.low_res_fraction,
                )
                first_factor = probed.first_epoch_time_factor(config.low_res_fraction)
                probe_full_size = (probed.seconds_per_epoch - probed.scoring_seconds_per_epoch) / mean_train_seconds(
                    1.0, config.low_res_fraction, probed.low_res_time_ratio
                )
                log.info(
                    "%s: the first epoch trained in %.1f s%s (the probe said %.1f s) → %d epochs",
                    label or "training",
                    first_epoch_train_seconds,
                    " on smaller images" if low_res_epochs(config.low_res_fraction, probed.epochs) else "",
                    probe_full_size * first_factor,
                    plan.epochs,
                )
                if checkpoint is not None:
                    resume.save_plan(checkpoint, asdict(plan))  # before the epoch's checkpoint: a resumed run keeps it
                return plan.epochs

    seed = config.seed + fold  # folds differ in their draws, runs repeat exactly
    seed_everything(seed)
    model = model_on(config, data.channels, num_classes + len(data.target_names), device)
    valid = split_of(data, valid_index)
    result = fit(
        model,
        split_of(data, train_index) if teaching is None else taught_split(data, train_index, teaching),
        valid,
        config,
        normalize,
        num_classes,
        metric,
        on_epoch=on_epoch,
        label=label,
        seed=seed,
        checkpoint=checkpoint,
        replan=replan,
        target_weights=target_weights(config, data.target_names),
        distill=None if teaching is None else (teaching.temperature, teaching.label_weight),
    )
    oof_plain, oof_plain_values = predict(
        result.model, valid.images, normalize, config, (plain_view(config.augment),), num_classes, data.multi_label
    )
    seconds = time.perf_counter() - started + result.resumed_seconds  # the whole run's time, across interruptions
    return FoldRun(result, valid_index, oof_plain, oof_plain_values, seconds, config=resolved, plan=plan)


def split_of(data: Prepared, index: np.ndarray) -> Split:
    """The train images at `index` (read from the memory-mapped array batch by batch), their labels and targets."""
    targets = None if data.train_targets is None else data.train_targets[index]
    return Split(Rows(data.train_images, index), data.train_labels[index], targets)


def fold_split(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices trained on and held out when `fold` is the validation fold."""
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


def fold_checkpoint(
    folder: str | Path,
    backbone: str,
    data: Prepared,
    fold_of: np.ndarray,
    fold: int,
    config: TrainConfig,
    metric: Metric = ACCURACY,
    teaching: Teaching | None = None,
) -> resume.Checkpoint:
    """The checkpoint of one fold's run, keyed by its settings, metric, data, fold and fold assignment (and a
    student's teaching)."""
    train_index, valid_index = fold_split(fold_of, fold)
    weights = resolve(config)
    key = resume.run_key(
        config,
        metric.name,
        data.fingerprint,
        fold,
        data.train_ids[train_index],
        data.train_ids[valid_index],
        None if weights is None else weights.identity,
        None if teaching is None else teaching.identity,
    )
    return resume.path_for(folder, backbone, fold, key)
