"""The training step, the epoch loop, one fold's run and batched prediction: the one copy that
`train`, tuning and the benchmarks all use."""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from tqdm import tqdm

from pipeline import checkpoint as checkpoints
from pipeline.affect import mean_ccc, mix_targets, split_outputs, target_loss
from pipeline.augment import Normalizer, apply_view, make_train_loader, plain_view
from pipeline.batch_augment import BatchAugment
from pipeline.config import PipelineError, TrainConfig
from pipeline.data import Prepared
from pipeline.metrics import log_loss_and_accuracy
from pipeline.models import autocast, model_on, pick_device
from pipeline.speed import CACHE_NAME, DEFAULT_CACHE, resolve_speed_settings

log = logging.getLogger(__name__)
# The time budget's probe (plan_epochs): steps run untimed first, because the first ones pay for memory
# allocation, kernel selection and the loader's start; then steps timed, enough to average out one slow
# step and few enough that the probe costs seconds where an epoch costs minutes.
PROBE_WARMUP_STEPS = 3
PROBE_TIMED_STEPS = 10
# Eval batches timed after one untimed batch: eval batches are large, two already average over hundreds of images.
PROBE_EVAL_BATCHES = 2


class NonFiniteLoss(RuntimeError):
    """Training diverged; lower the learning rate."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_images_per_s: float


@dataclass
class FitResult:
    model: torch.nn.Module  # holds the kept epoch's weights
    best_epoch: int
    best_val_acc: float
    history: list[EpochRecord] = field(default_factory=list)
    resumed_epochs: int = 0  # epochs restored from a checkpoint rather than trained by this process

    @property
    def resumed_seconds(self) -> float:
        """Time the restored epochs took in the run that was interrupted."""
        return sum(record.seconds for record in self.history[:self.resumed_epochs])

    def history_rows(self) -> list[dict]:
        return [asdict(record) for record in self.history]


class BatchMixup(Mixup):
    """timm's Mixup in its batch mode, keeping the last batch's mixing weight so that the regression
    targets are mixed exactly as the images and class targets were."""

    last_lam = 1.0

    def _mix_batch(self, x: torch.Tensor) -> float:
        self.last_lam = super()._mix_batch(x)
        return self.last_lam


class TrainStep:
    """One optimisation step on a uint8 batch: normalise (augmenting first under augment_on: batch), mix, forward, backward, update.

    The loss is cross-entropy on the class outputs plus, when the model has target outputs
    (`num_targets`, see pipeline/affect.py), `target_loss_weight` times the target loss on the values
    present. Under mixup/cutmix the targets are mixed with the images' weight; a value mixed with a
    missing one is missing.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, normalize: Normalizer, num_classes: int, steps_per_epoch: int,
                 num_targets: int = 0, seed: int | None = None):
        self.model, self.config, self.normalize = model, config, normalize
        self.num_classes, self.num_targets = num_classes, num_targets
        self.device = normalize.device
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = create_optimizer_v2(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = self._cosine_schedule(config.epochs)
        self.mixup = None
        if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
            self.mixup = BatchMixup(mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
                               label_smoothing=config.label_smoothing, num_classes=num_classes)
            self.loss_fn = SoftTargetCrossEntropy()
        else:
            self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay else None
        self.augment = BatchAugment(config.augment, config.augment_strength, config.seed if seed is None else seed, self.device) if config.augment_on == "batch" else None
        self.updates = 0
        self.epochs = config.epochs
        self.image_scale = 1.0  # below 1 in the epochs that train on smaller images (progressive resizing)

    def _cosine_schedule(self, epochs: int):
        config = self.config
        scheduler, _ = create_scheduler_v2(
            self.optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=config.warmup_epochs,
            warmup_lr=config.lr * 0.01, min_lr=config.lr * 0.01, step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)
        return scheduler

    def set_epoch(self, epoch: int) -> None:
        """Before each epoch: batched augmentations draw from (seed, epoch), as the loader's batches do;
        the first epochs of a progressive run train on smaller images."""
        if self.augment is not None:
            self.augment.set_epoch(epoch)
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
        with autocast(self.device, self.config.precision):
            logits, values = split_outputs(self.model(x), self.num_classes)
            loss = self.loss_fn(logits, y)
        if self.num_targets and targets is not None:
            targets = targets.to(self.device, non_blocking=True)
            if self.mixup is not None:
                targets = mix_targets(targets, self.mixup.last_lam)
            loss = loss + self.config.target_loss_weight * target_loss(values, targets, self.config.target_loss)
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
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "updates": self.updates}
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


EpochCallback = Callable[[EpochRecord], None]


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


class TooFewImages(PipelineError):
    """A training set smaller than one batch."""


def check_enough_images(count: int, config: TrainConfig, where: str) -> None:
    """Only full batches are trained on; fewer images than one batch would train on nothing."""
    if count < config.batch_size:
        raise TooFewImages(
            f"{where} has {count} training images, fewer than batch_size={config.batch_size} (only full batches are "
            f"trained on): lower train.batch_size in params.yaml, or backbones.<name>.batch_size for this backbone")


def _cpu(state: dict) -> dict:
    return {key: value.detach().cpu() for key, value in state.items()}


class WeightAverage:
    """The equal-weight mean of the weights (batch-norm statistics too, as timm's avg_checkpoints does)
    after each of the last `fraction` of a run's epochs: at least one epoch when on, none at 0."""

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.count = 0
        self.total: dict[str, torch.Tensor] = {}

    def covers(self, epoch: int, total_epochs: int) -> bool:
        """Whether `epoch` of `total_epochs` is among the averaged ones (the total is known after a re-plan)."""
        return self.fraction > 0 and epoch > total_epochs - max(1, round(self.fraction * total_epochs))

    def add(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            if value.is_floating_point():
                value = value.detach().float()
                self.total[key] = self.total[key] + value if key in self.total else value.clone()
            else:
                self.total[key] = value.detach().clone()  # counters such as num_batches_tracked: the latest
        self.count += 1

    def applied_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of `model` holding the mean of the weights added so far."""
        averaged = copy.deepcopy(model)
        dtypes = {key: value.dtype for key, value in model.state_dict().items()}
        averaged.load_state_dict({key: (value / self.count).to(dtypes[key]) if value.is_floating_point() else value
                                  for key, value in self.total.items()})
        return averaged

    def state_dict(self) -> dict:
        return {"count": self.count, "total": _cpu(self.total)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.count = state["count"]
        self.total = {key: value.to(device) for key, value in state["total"].items()}


def fit(
    model: torch.nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    config: TrainConfig,
    normalize: Normalizer,
    num_classes: int,
    on_epoch: EpochCallback | None = None,
    label: str = "",
    seed: int | None = None,
    checkpoint: checkpoints.Checkpoint | None = None,
    train_targets: np.ndarray | None = None,
    val_targets: np.ndarray | None = None,
    replan: Callable[[float], int] | None = None,
) -> FitResult:
    """Train for `config.epochs`, scoring the validation images after each epoch.

    `train_targets`/`val_targets` (N×T float, NaN = missing): regression targets the model's outputs
    after the `num_classes` class logits learn (pipeline/affect.py); their CCC joins the epoch log line.

    `on_epoch` sees every scored epoch's record and may raise to stop early (tuning prunes this way).
    Epochs between scorings (`config.eval_every`) record NaN validation figures.
    `seed` (default `config.seed`) fixes the batch order and augmentations.
    `config.average_last_fraction` > 0: the last epoch is scored and kept with the mean of the weights
    after each epoch of that last fraction of the run (:class:`WeightAverage`).
    `checkpoint`: where the state after each epoch is kept, and a run with the same key resumed
    from; the resumed run ends exactly as an uninterrupted one would. None: no checkpoints.
    `replan`: given the first epoch's training seconds, the epochs the run trains in all; the schedule is
    refitted to them (only valid while the lr so far does not depend on the total: a warm-up of at
    least one epoch). Called once, before that epoch is scored or saved.
    """
    check_enough_images(len(train_images), config, label or "the training set")
    seed = config.seed if seed is None else seed
    loader = make_train_loader(train_images, train_labels, config, seed=seed, targets=train_targets)
    num_targets = 0 if train_targets is None else train_targets.shape[1]
    step = TrainStep(model, config, normalize, num_classes, steps_per_epoch=len(loader), num_targets=num_targets, seed=seed)
    quiet = not sys.stderr.isatty()  # bars on a terminal; per-epoch log lines always
    best_acc, best_epoch, best_state = -1.0, 0, None
    history: list[EpochRecord] = []
    average = WeightAverage(config.average_last_fraction)
    done = 0
    saved = checkpoints.load(checkpoint, label) if checkpoint is not None else None
    if saved is not None:
        step.load_state_dict(saved["step"])
        average.load_state_dict(saved["average"], normalize.device)
        best_acc, best_epoch, best_state = saved["best_acc"], saved["best_epoch"], saved["best_state"]
        history = [EpochRecord(**record) for record in saved["history"]]
        checkpoints.set_rng_states(saved["rng"], normalize.device)
        done = saved["epoch"]
        log.info("%s: resuming after epoch %d of %d from %s", label or "training", done, config.epochs, checkpoint.path)
    bar = tqdm(desc=label or "training", unit="epoch", disable=quiet, initial=done, total=config.epochs)
    epoch = done
    while epoch < config.epochs:  # not a range: `replan` may change the total after the first epoch
        epoch += 1
        loader.batch_sampler.set_epoch(epoch)
        step.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        total_loss = torch.zeros((), device=normalize.device)
        for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=quiet, unit="batch"):
            total_loss += step(*batch)  # (images, labels[, targets])
        train_loss = total_loss.item() / len(loader)  # .item() waits for the device: then the time is right
        train_seconds = time.perf_counter() - started
        if epoch == 1 and replan is not None and config.epochs > 1:
            config = replace(config, epochs=replan(train_seconds))
            step.set_epochs(config.epochs)
            bar.total = config.epochs
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"{label}: training loss became {train_loss} at epoch {epoch}; lower lr (now {config.lr}) or use fp32")
        if average.covers(epoch, config.epochs):
            average.add(step.eval_model.state_dict())
        scored = average.applied_to(step.eval_model) if epoch == config.epochs and average.count else step.eval_model
        evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
        val_loss, val_acc, val_ccc = math.nan, math.nan, math.nan
        if evaluated:
            probs, values = predict(scored, val_images, normalize, config, views=(plain_view(config.augment),), num_classes=num_classes)
            val_loss, val_acc = log_loss_and_accuracy(probs, val_labels)
            if num_targets and val_targets is not None:
                val_ccc = mean_ccc(values, val_targets)
        record = EpochRecord(epoch, train_loss, val_loss, val_acc, step.lr, time.perf_counter() - started,
                             len(loader) * config.batch_size / train_seconds)
        history.append(record)
        line = (f"{label} epoch {epoch}/{config.epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
                f"val_acc {val_acc:.4f}  " + (f"val_ccc {val_ccc:.4f}  " if num_targets else "") +
                f"{record.train_images_per_s:.0f} img/s  {record.seconds:.1f}s")
        if quiet:
            log.info(line)
        else:
            tqdm.write(line)  # printed above the bars instead of through them
        if evaluated:
            bar.set_postfix(val_acc=f"{val_acc:.4f}", refresh=False)
            if config.checkpoint == "last" or val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch
                best_state = copy.deepcopy(scored.state_dict())
        if checkpoint is not None:
            checkpoints.save(checkpoint, {
                "epoch": epoch, "step": step.state_dict(), "average": average.state_dict(), "best_acc": best_acc, "best_epoch": best_epoch,
                "best_state": None if best_state is None else _cpu(best_state),
                "history": [asdict(record) for record in history], "rng": checkpoints.rng_states(normalize.device)})
        bar.update(1)
        if evaluated and on_epoch is not None:
            on_epoch(record)
    bar.close()
    kept = step.eval_model
    kept.load_state_dict(best_state)
    return FitResult(model=kept, best_epoch=best_epoch, best_val_acc=best_acc, history=history, resumed_epochs=done)


@torch.inference_mode()
def predict(
    model: torch.nn.Module, images: np.ndarray, normalize: Normalizer, config: TrainConfig, views: tuple[dict, ...],
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities float32 N×classes, target values float32 N×targets), each averaged over the
    test-time views. `num_classes`: the model's outputs after it are targets; None: every output is a class."""
    model.eval()
    probs, values = [], []
    for start in range(0, len(images), config.eval_batch_size):
        x = normalize(torch.from_numpy(np.array(images[start:start + config.eval_batch_size])))  # copy: may be a read-only memmap
        with autocast(normalize.device, config.precision):
            outputs = [model(apply_view(x, view)).float() for view in views]
        split = [split_outputs(out, out.shape[1] if num_classes is None else num_classes) for out in outputs]
        probs.append((sum(torch.softmax(logits, dim=1) for logits, _ in split) / len(views)).cpu())
        values.append((sum(v for _, v in split) / len(views)).cpu())
    return torch.cat(probs).numpy(), torch.cat(values).numpy()


def predict_proba(
    model: torch.nn.Module, images: np.ndarray, normalize: Normalizer, config: TrainConfig, views: tuple[dict, ...],
    num_classes: int | None = None,
) -> np.ndarray:
    """Class probabilities averaged over the test-time views, float32 N×classes."""
    return predict(model, images, normalize, config, views, num_classes)[0]


@dataclass(frozen=True)
class EpochPlan:
    """The epochs one run trains under `train.time_budget_minutes`, and the measurements they came from."""

    epochs: int
    # Training (the run's mean, when its first epochs train on smaller images) plus the epoch's share of the validation scoring.
    seconds_per_epoch: float
    predict_seconds: float  # the final OOF (plain and TTA) and test predictions
    budget_seconds: float  # this run's share of the backbone's budget
    scoring_seconds_per_epoch: float = 0.0  # the validation scoring's share of seconds_per_epoch
    probe_seconds_per_epoch: float | None = None  # what the probe measured, when the first epoch re-planned
    low_res_time_ratio: float = 1.0  # a step on the smaller images over a full-size one, as the probe timed them (train.low_res_fraction)

    def first_epoch_time_factor(self, low_res_fraction: float) -> float:
        """The first epoch's training time over a full-size epoch's: the probe's ratio when it trains on smaller images."""
        return self.low_res_time_ratio if low_res_epochs(low_res_fraction, self.epochs) >= 1 else 1.0


def budget_plan(budget_seconds: float, spent_seconds: float, seconds_per_epoch: float, predict_seconds: float,
                max_epochs: int, label: str = "") -> EpochPlan:
    """The epochs that fit in the budget left after the probe (`spent_seconds`) and the final predictions:
    at most `max_epochs` (train.epochs), at least 1, with a warning when not even 1 fits."""
    fitting = math.floor((budget_seconds - spent_seconds - predict_seconds) / seconds_per_epoch)
    if fitting < 1:
        log.warning("%s: the time budget of %.0f s for this run (train.time_budget_minutes / K folds) does not fit one "
                    "epoch: %.1f s per epoch measured, %.0f s to predict; training 1 epoch over budget. Raise "
                    "time_budget_minutes (train or backbones.<name>), or choose a smaller model, input_size or data",
                    label or "training", budget_seconds, seconds_per_epoch, predict_seconds)
    return EpochPlan(max(1, min(max_epochs, fitting)), seconds_per_epoch, predict_seconds, budget_seconds)


def mean_train_seconds(full_size_seconds: float, low_res_fraction: float, low_res_time_ratio: float) -> float:
    """An epoch's training time averaged over a run whose first `low_res_fraction` of the epochs train on
    smaller images, each step `low_res_time_ratio` times a full-size one."""
    return full_size_seconds * (1 - low_res_fraction * (1 - low_res_time_ratio))


def replan_after_first_epoch(plan: EpochPlan, first_epoch_train_seconds: float, spent_seconds: float, max_epochs: int,
                             label: str = "", low_res_fraction: float = 0.0) -> EpochPlan:
    """The plan again from the first real epoch, a longer and truer measurement than the probe's few steps
    (a probe right after other work timed 65 s an epoch that then took 55): the first epoch plus those
    that fit in the budget left after `spent_seconds` (probe and first epoch) and the final predictions.
    A first epoch on smaller images (`low_res_fraction`) stands for a full-size one by the probe's ratio."""
    full_size_seconds = first_epoch_train_seconds / plan.first_epoch_time_factor(low_res_fraction)
    seconds_per_epoch = mean_train_seconds(full_size_seconds, low_res_fraction, plan.low_res_time_ratio) + plan.scoring_seconds_per_epoch
    # The first epoch is among the epochs planned, so it is not counted as spent.
    replanned = budget_plan(plan.budget_seconds, spent_seconds - seconds_per_epoch, seconds_per_epoch, plan.predict_seconds,
                            max_epochs, label)
    return replace(replanned, scoring_seconds_per_epoch=plan.scoring_seconds_per_epoch, probe_seconds_per_epoch=plan.seconds_per_epoch,
                   low_res_time_ratio=plan.low_res_time_ratio)


def plan_epochs(data: Prepared, train_index: np.ndarray, valid_index: np.ndarray, config: TrainConfig, normalize: Normalizer,
                budget_seconds: float, predict_test: bool = True, label: str = "") -> EpochPlan:
    """The epochs of `config` that fit in `budget_seconds`, from the speed of a throw-away model of the same
    settings on the same images: training steps, and forward passes of eval batches.

    It draws from the global generators, so call it before the real run is seeded.
    """
    started = time.perf_counter()
    num_classes = len(data.classes)
    model = model_on(config, data.channels, num_classes + len(data.target_names), normalize.device)
    model.train()
    batches_per_epoch = len(train_index) // config.batch_size
    warmup = min(PROBE_WARMUP_STEPS, batches_per_epoch - 1)
    timed = min(PROBE_TIMED_STEPS, batches_per_epoch - warmup)
    probe_index = train_index[:(warmup + timed) * config.batch_size]  # only the images the probe trains on are read
    targets = None if data.train_targets is None else data.train_targets[probe_index]
    loader = make_train_loader(data.train_images[probe_index], data.train_labels[probe_index], config, seed=config.seed, targets=targets)
    step = TrainStep(model, config, normalize, num_classes, steps_per_epoch=batches_per_epoch,
                     num_targets=0 if targets is None else targets.shape[1])
    step_seconds = _time_steps(step, loader, warmup, timed)
    low_res_time_ratio = 1.0
    if config.low_res_fraction > 0:
        step.image_scale = config.low_res_scale
        low_res_time_ratio = _time_steps(step, loader, warmup, timed) / step_seconds
    del loader

    eval_images = data.train_images[valid_index[:PROBE_EVAL_BATCHES * config.eval_batch_size]]
    predict(step.eval_model, eval_images[:config.eval_batch_size], normalize, config, (plain_view(config.augment),), num_classes)  # untimed
    timing = time.perf_counter()
    predict(step.eval_model, eval_images, normalize, config, (plain_view(config.augment),), num_classes)
    image_seconds = (time.perf_counter() - timing) / len(eval_images)

    n_val, views = len(valid_index), len(config.tta)
    n_test = len(data.test_images) if predict_test else 0
    scoring_seconds_per_epoch = n_val * image_seconds / config.eval_every
    train_seconds = mean_train_seconds(batches_per_epoch * step_seconds, config.low_res_fraction, low_res_time_ratio)
    seconds_per_epoch = train_seconds + scoring_seconds_per_epoch
    predict_seconds = (n_val * (1 + views) + n_test * views) * image_seconds
    plan = budget_plan(budget_seconds, time.perf_counter() - started, seconds_per_epoch, predict_seconds, config.epochs, label)
    return replace(plan, scoring_seconds_per_epoch=scoring_seconds_per_epoch, low_res_time_ratio=low_res_time_ratio)


def _time_steps(step: TrainStep, loader: torch.utils.data.DataLoader, warmup: int, timed: int) -> float:
    """Seconds a training step takes, after `warmup` untimed steps (the loader yields warmup + timed batches)."""
    batches = iter(loader)
    for _ in range(warmup):
        float(step(*next(batches)))  # float(): waits for the device to finish the step
    timing = time.perf_counter()
    for _ in range(timed):
        loss = step(*next(batches))
    float(loss)
    return (time.perf_counter() - timing) / timed


def _run_plan(data: Prepared, fold_of: np.ndarray, train_index: np.ndarray, valid_index: np.ndarray, config: TrainConfig,
              normalize: Normalizer, predict_test: bool, label: str, checkpoint: checkpoints.Checkpoint | None) -> EpochPlan:
    """The plan stored beside the run's checkpoint when it resumes (measuring again could give other epochs
    and so another lr schedule than the one its saved state follows); else measured now, and stored."""
    stored = checkpoints.load_plan(checkpoint) if checkpoint is not None else None
    if stored is not None:
        plan = EpochPlan(**stored)
    else:
        budget_seconds = config.time_budget_minutes * 60 / len(np.unique(fold_of))
        plan = plan_epochs(data, train_index, valid_index, config, normalize, budget_seconds, predict_test, label)
        if checkpoint is not None:
            checkpoints.save_plan(checkpoint, asdict(plan))
    log.info("%s: budget %.0f s → %d epochs (%.1f s/epoch measured, %.0f s to predict)%s", label or "training",
             plan.budget_seconds, plan.epochs, plan.seconds_per_epoch, plan.predict_seconds,
             ", the plan stored before the interruption" if stored is not None else "")
    return plan


@dataclass
class FoldRun:
    fit: FitResult
    valid_index: np.ndarray
    oof_plain: np.ndarray
    oof_tta: np.ndarray
    test_tta: np.ndarray | None
    seconds: float
    # Target values (N×targets; N×0 when the data has none), as the probabilities: plain, TTA, test TTA.
    oof_plain_values: np.ndarray
    oof_tta_values: np.ndarray
    test_tta_values: np.ndarray | None
    # The settings the run trained with, saved beside its model: `auto` precision and channels-last resolved;
    # `epochs` as given (under a time budget, `plan.epochs` were trained).
    config: TrainConfig
    plan: EpochPlan | None = None  # under a time budget: the epochs trained and the speed they were planned from


def fit_fold(
    data: Prepared, fold_of: np.ndarray, fold: int, config: TrainConfig,
    on_epoch: EpochCallback | None = None, predict_test: bool = True, label: str = "",
    checkpoint: checkpoints.Checkpoint | None = None,
) -> FoldRun:
    """Train on every fold but `fold`; predict `fold` (plain and TTA) and, optionally, the test set.

    `checkpoint` (see :func:`fold_checkpoint`): resume from it and keep it up to date; None: no checkpoints.
    With `config.time_budget_minutes`, the run trains the epochs :func:`plan_epochs` fits in its share
    of the budget (see :class:`EpochPlan`), planned again from its first epoch's time when the warm-up
    lasts an epoch or more, exactly as a run without a budget set to those epochs.
    `auto` precision and channels-last are resolved first (pipeline/speed.py), cached beside the
    checkpoint or, without one, in the default cache; the budget is planned with what they resolve to.
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
    config = resolved = resolve_speed_settings(config, data.channels, num_classes + len(data.target_names),
                                               data.train_images.shape[1], device, speed_cache)
    normalize = Normalizer(data.pixel_mean, data.pixel_std, config.input_size, device, config.channels_last)
    plan, replan = None, None
    if config.time_budget_minutes is not None:
        plan = _run_plan(data, fold_of, train_index, valid_index, config, normalize, predict_test, label, checkpoint)
        config = replace(config, epochs=plan.epochs)
        if config.warmup_epochs >= 1:  # the first epoch's lr does not depend on the total: it can still change

            def replan(first_epoch_train_seconds: float) -> int:
                nonlocal plan
                probed = plan
                plan = replan_after_first_epoch(probed, first_epoch_train_seconds, time.perf_counter() - started, resolved.epochs, label,
                                                config.low_res_fraction)
                first_factor = probed.first_epoch_time_factor(config.low_res_fraction)
                probe_full_size = (probed.seconds_per_epoch - probed.scoring_seconds_per_epoch) / mean_train_seconds(
                    1.0, config.low_res_fraction, probed.low_res_time_ratio)
                log.info("%s: the first epoch trained in %.1f s%s (the probe said %.1f s) → %d epochs", label or "training",
                         first_epoch_train_seconds, " on smaller images" if low_res_epochs(config.low_res_fraction, probed.epochs) else "",
                         probe_full_size * first_factor, plan.epochs)
                if checkpoint is not None:
                    checkpoints.save_plan(checkpoint, asdict(plan))  # before the epoch's checkpoint: a resumed run keeps it
                return plan.epochs
    seed = config.seed + fold  # folds differ in their draws, runs repeat exactly
    seed_everything(seed)
    model = model_on(config, data.channels, num_classes + len(data.target_names), device)
    targets = data.train_targets
    result = fit(model, data.train_images[train_index], data.train_labels[train_index],
                 data.train_images[valid_index], data.train_labels[valid_index],
                 config, normalize, num_classes, on_epoch=on_epoch, label=label, seed=seed, checkpoint=checkpoint,
                 train_targets=None if targets is None else targets[train_index],
                 val_targets=None if targets is None else targets[valid_index], replan=replan)
    valid_images = data.train_images[valid_index]
    oof_plain, oof_plain_values = predict(result.model, valid_images, normalize, config, (plain_view(config.augment),), num_classes)
    oof_tta, oof_tta_values = predict(result.model, valid_images, normalize, config, config.tta, num_classes)
    test_tta, test_tta_values = predict(result.model, data.test_images, normalize, config, config.tta, num_classes) if predict_test else (None, None)
    seconds = time.perf_counter() - started + result.resumed_seconds  # the whole run's time, across interruptions
    return FoldRun(result, valid_index, oof_plain, oof_tta, test_tta, seconds, oof_plain_values, oof_tta_values, test_tta_values,
                   config=resolved, plan=plan)


def fold_split(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices trained on and held out when `fold` is the validation fold."""
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


def fold_checkpoint(folder: str | Path, backbone: str, data: Prepared, fold_of: np.ndarray, fold: int, config: TrainConfig) -> checkpoints.Checkpoint:
    """The checkpoint of one fold's run, keyed by its settings, data, fold and fold assignment."""
    train_index, valid_index = fold_split(fold_of, fold)
    key = checkpoints.run_key(config, data.fingerprint, fold, data.train_ids[train_index], data.train_ids[valid_index])
    return checkpoints.path_for(folder, backbone, fold, key)
