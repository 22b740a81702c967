"""The epoch loop: train, score the validation fold, keep an epoch (or the last ones' mean), checkpoint each epoch."""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.data import Split
from pipeline.errors import PipelineError
from pipeline.evaluation.affect import mean_ccc
from pipeline.evaluation.metrics import ACCURACY, Metric, accuracy, log_loss
from pipeline.training import resume
from pipeline.training.augment import Normalizer, make_train_loader, plain_view
from pipeline.training.class_balance import balanced_sampling, class_counts
from pipeline.training.predict import predict
from pipeline.training.step import TrainStep

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Training diverged; lower the learning rate."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    val_score: float  # the competition's metric (competition.metric) on the validation fold
    lr: float
    seconds: float
    train_images_per_s: float


@dataclass
class FitResult:
    model: torch.nn.Module  # holds the kept epoch's weights
    best_epoch: int
    best_val_score: float  # the competition's metric of the kept epoch on the validation fold
    history: list[EpochRecord] = field(default_factory=list)
    resumed_epochs: int = 0  # epochs restored from a checkpoint rather than trained by this process

    @property
    def resumed_seconds(self) -> float:
        """Time the restored epochs took in the run that was interrupted."""
        return sum(record.seconds for record in self.history[: self.resumed_epochs])

    def history_rows(self) -> list[dict]:
        return [asdict(record) for record in self.history]


EpochCallback = Callable[[EpochRecord], None]


class TooFewImages(PipelineError):
    """A training set smaller than one batch."""


def check_enough_images(count: int, config: TrainConfig, where: str) -> None:
    """Only full batches are trained on; fewer images than one batch would train on nothing."""
    if count < config.batch_size:
        raise TooFewImages(
            f"{where} has {count} training images, fewer than batch_size={config.batch_size} (only full batches are "
            f"trained on): lower train.batch_size in params.yaml, or backbones.<name>.batch_size for this backbone"
        )


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
        averaged.load_state_dict(
            {
                key: (value / self.count).to(dtypes[key]) if value.is_floating_point() else value
                for key, value in self.total.items()
            }
        )
        return averaged

    def state_dict(self) -> dict:
        return {"count": self.count, "total": _cpu(self.total)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.count = state["count"]
        self.total = {key: value.to(device) for key, value in state["total"].items()}


def fit(
    model: torch.nn.Module,
    train: Split,
    valid: Split,
    config: TrainConfig,
    normalize: Normalizer,
    num_classes: int,
    metric: Metric = ACCURACY,
    on_epoch: EpochCallback | None = None,
    label: str = "",
    seed: int | None = None,
    checkpoint: resume.Checkpoint | None = None,
    replan: Callable[[float], int] | None = None,
    target_weights: tuple[float, ...] | None = None,
    distill: tuple[float, float] | None = None,
) -> FitResult:
    """Train for `config.epochs` on `train`, scoring `valid` by `metric` (and accuracy, log-loss) after each epoch.

    The splits' targets are what the model's outputs after the `num_classes` class logits learn
    (pipeline/training/target_loss.py); their CCC joins the epoch log line.

    `on_epoch` sees every scored epoch's record and may raise to stop early (tuning prunes this way).
    Epochs between scorings (`config.eval_every`) record NaN validation figures.
    `seed` (default `config.seed`) fixes the batch order and augmentations.
    `config.average_last_fraction` > 0: the last epoch is scored and kept with the mean of the weights
    after each epoch of that last fraction of the run (:class:`WeightAverage`).
    `checkpoint`: where the state after each epoch is kept, and a run with the same key resumed
    from; the resumed run ends exactly as an uninterrupted one would. None: no resume.
    `replan`: given the first epoch's training seconds, the epochs the run trains in all; the schedule is
    refitted to them (only valid while the lr so far does not depend on the total: a warm-up of at
    least one epoch). Called once, before that epoch is scored or saved.
    `target_weights`: each target's λ (pipeline/training/target_loss.py); None: `config.target_loss_weight` for all.
    `distill` (temperature, label weight): a student's run, whose train targets end with one teacher probability
    column per class (pipeline/training/distillation.py).
    """
    check_enough_images(len(train.images), config, label or "the training set")
    seed = config.seed if seed is None else seed
    loader = make_train_loader(
        train.images,
        train.labels,
        config,
        seed=seed,
        targets=train.targets,
        device=normalize.device,
        probabilities=balanced_sampling(train.labels, num_classes) if config.class_balance == "sampler" else None,
    )
    num_targets = 0 if train.targets is None else train.targets.shape[1] - (num_classes if distill else 0)
    multi_label = train.labels.ndim == 2
    step = TrainStep(
        model,
        config,
        normalize,
        num_classes,
        steps_per_epoch=len(loader),
        num_targets=num_targets,
        seed=seed,
        class_counts=class_counts(train.labels, num_classes),
        multi_label=multi_label,
        images=len(train.labels),
        target_weights=target_weights,
        distill=distill,
    )
    quiet = not sys.stderr.isatty()  # bars on a terminal; per-epoch log lines always
    best_score, best_epoch, best_state = metric.worst, 0, None
    history: list[EpochRecord] = []
    average = WeightAverage(config.average_last_fraction)
    done = 0
    saved = resume.load(checkpoint, label) if checkpoint is not None else None
    if saved is not None:
        step.load_state_dict(saved["step"])
        average.load_state_dict(saved["average"], normalize.device)
        best_score, best_epoch, best_state = saved["best_score"], saved["best_epoch"], saved["best_state"]
        history = [EpochRecord(**record) for record in saved["history"]]
        resume.set_rng_states(saved["rng"], normalize.device)
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
            raise NonFiniteLoss(
                f"{label}: training loss became {train_loss} at epoch {epoch}; lower lr (now {config.lr}) or use fp32"
            )
        if average.covers(epoch, config.epochs):
            average.add(step.eval_model.state_dict())
        scored = average.applied_to(step.eval_model) if epoch == config.epochs and average.count else step.eval_model
        evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
        val_loss, val_acc, val_score, val_ccc = math.nan, math.nan, math.nan, math.nan
        if evaluated:
            probs, values = predict(
                scored,
                valid.images,
                normalize,
                config,
                views=(plain_view(config.augment),),
                num_classes=num_classes,
                multi_label=multi_label,
            )
            val_loss, val_acc, val_score = (
                log_loss(probs, valid.labels),
                accuracy(probs, valid.labels),
                metric(probs, valid.labels),
            )
            if num_targets and valid.targets is not None:
                val_ccc = mean_ccc(values, valid.targets)
        record = EpochRecord(
            epoch,
            train_loss,
            val_loss,
            val_acc,
            val_score,
            step.lr,
            time.perf_counter() - started,
            len(loader) * config.batch_size / train_seconds,
        )
        history.append(record)
        line = (
            f"{label} epoch {epoch}/{config.epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
            f"val_acc {val_acc:.4f}  "
            + (f"val_{metric.name} {val_score:.4f}  " if metric.name != "accuracy" else "")
            + (f"val_ccc {val_ccc:.4f}  " if num_targets else "")
            + f"{record.train_images_per_s:.0f} img/s  {record.seconds:.1f}s"
        )
        if quiet:
            log.info(line)
        else:
            tqdm.write(line)  # printed above the bars instead of through them
        if evaluated:
            bar.set_postfix({f"val_{metric.name}": f"{val_score:.4f}"}, refresh=False)
            if config.keep_epoch == "last" or metric.better(val_score, best_score):
                best_score, best_epoch = val_score, epoch
                best_state = copy.deepcopy(scored.state_dict())
        if checkpoint is not None:
            resume.save(
                checkpoint,
                {
                    "epoch": epoch,
                    "step": step.state_dict(),
                    "average": average.state_dict(),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": None if best_state is None else _cpu(best_state),
                    "history": [asdict(record) for record in history],
                    "rng": resume.rng_states(normalize.device),
                },
            )
        bar.update(1)
        if evaluated and on_epoch is not None:
            on_epoch(record)
    bar.close()
    kept = step.eval_model
    kept.load_state_dict(best_state)
    return FitResult(model=kept, best_epoch=best_epoch, best_val_score=best_score, history=history, resumed_epochs=done)
