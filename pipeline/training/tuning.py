"""An Optuna study over one backbone's `train` settings, on the project's storage (the `tune@` stage's work).

The objective trains with the same code as `train` (pipeline.training.fold_run.fit_fold) for `tune.epochs` on
the folds in `tune.folds` and returns the mean held-out score by the competition's metric (competition.metric),
maximised or minimised as the metric wants. With one fold every epoch is reported and a pruner may stop the
trial there; with several, each fold's score is reported in turn for a pruner made for that (Wilcoxon). The
first trial of a new study is the untuned setting from params.yaml, so the study itself shows what tuning gained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
import torch
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.config import TrainConfig, TuneConfig
from pipeline.data import Prepared, load_folds
from pipeline.errors import ConfigError, PipelineError
from pipeline.evaluation.metrics import Metric
from pipeline.training.fold_run import fit_fold
from pipeline.training.loop import EpochRecord, NonFiniteLoss, TooFewImages

log = logging.getLogger(__name__)
# Workers starting together on a new database race to create its tables; five tries outlast that race.
STORAGE_ATTEMPTS = 5
# The median pruner compares a trial with finished ones: after 2 trials there is a median to compare with,
# and before epoch 2 accuracy is too noisy to judge a trial by.
MEDIAN_STARTUP_TRIALS = 2
MEDIAN_WARMUP_EPOCHS = 2
# The Wilcoxon pruner stops a trial whose folds so far score below the best's at this significance: loose,
# because a fold or two is little evidence and a wrongly kept trial costs only time.
WILCOXON_P = 0.1
# Trials that fail for these reasons are recorded as FAIL and the study goes on.
TRIAL_FAILURES = (NonFiniteLoss, TooFewImages, torch.OutOfMemoryError, MemoryError)


class NoTracebackOnCtrlC(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C with its traceback; the user pressed it, one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
            record.exc_info = None
        return True


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file for a plain path, an RDB for a URL (sqlite:///, postgresql://, mysql://)."""
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DBAPIError:
            # Workers starting together on a new database race to create its tables; the loser retries.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 + random.random())


def without_password(url: str) -> str:
    """The URL without its password, fit for logs and output files."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


# Settings that cannot change a trial's score: editing them keeps the study going. A trial trains
# tune.epochs, so neither the full run's epochs nor its time budget reach it.
NOT_IN_OBJECTIVE = ("epochs", "time_budget_minutes", "eval_batch_size", "workers")


def study_name(
    backbone: str, base: TrainConfig, tune: TuneConfig, data: Prepared, folds_path: Path, metric: Metric
) -> str:
    """Backbone plus a fingerprint of data, folds, metric, search space and budget: new data, new study."""
    settings = {k: v for k, v in dataclasses.asdict(base).items() if k not in NOT_IN_OBJECTIVE}
    recipe = {
        "data": data.fingerprint,
        "folds": hashlib.sha256(Path(folds_path).read_bytes()).hexdigest(),
        "space": tune.space,
        "epochs": tune.epochs,
        "tune_folds": tune.folds,
        "metric": metric.name,
        "base": settings,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{backbone}-{digest}"


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    name = tune.pruner
    if name == "auto":
        name = "median" if len(tune.folds) == 1 else "wilcoxon"
    if name == "wilcoxon" and len(tune.folds) == 1:
        raise ConfigError("tune.pruner=wilcoxon compares folds and needs several tune.folds; use median for one fold")
    return {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS
        ),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tune.epochs),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P),
        "none": lambda: optuna.pruners.NopPruner(),
    }[name]()


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    values = {}
    for name, spec in space.items():
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
            values[name] = trial.suggest_int(name, spec["low"], spec["high"])
        else:
            values[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
    return values


def untuned_values(base: TrainConfig, space: dict[str, dict]) -> dict[str, Any]:
    """The params.yaml values of the tuned keys, where they lie inside the search space."""
    values = {}
    for name, spec in space.items():
        value = getattr(base, name)
        inside = (
            value in spec["choices"]
            if "choices" in spec
            else value is not None and spec["low"] <= value <= spec["high"]
        )
        if inside:
            values[name] = value
    return values


class Heartbeat:
    """Refreshes a RUNNING trial's heartbeat from a thread, so a dead worker's trial can be told apart."""

    def __init__(self, study: optuna.Study, trial_id: int, every: float):
        self.study, self.trial_id, self.every = study, trial_id, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            self.study._storage.set_trial_system_attr(self.trial_id, "heartbeat", time.time())
            if self.stop.wait(self.every):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def fail_stale_trials(study: optuna.Study, grace_seconds: float) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker stopped beating more than `grace_seconds` ago."""
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.system_attrs.get("heartbeat", trial.datetime_start.timestamp() if trial.datetime_start else now)
        if now - last > grace_seconds:
            try:
                study._storage.set_trial_user_attr(
                    trial._trial_id, "fail_reason", f"no heartbeat for {now - last:.0f}s: its worker died"
                )
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
            except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # another worker got there first
    if failed:
        log.info("tune: trials %s had no live worker and are marked FAIL", failed)
    return failed


class Objective:
    """Mean held-out score (the competition's metric) of one trial's settings; the data is loaded once, not per
    trial."""

    def __init__(
        self, data: Prepared, fold_of: np.ndarray, base: TrainConfig, tune: TuneConfig, metric: Metric, label: str
    ):
        self.data, self.fold_of, self.base, self.tune, self.label = data, fold_of, base, tune, label
        self.metric = metric

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            with Heartbeat(trial.study, trial._trial_id, self.tune.heartbeat_seconds):
                return self._score(trial)
        except TRIAL_FAILURES as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")  # shown by the dashboard
            raise

    def _score(self, trial: optuna.Trial) -> float:
        config = dataclasses.replace(
            self.base, epochs=self.tune.epochs, time_budget_minutes=None, **suggest(trial, self.tune.space)
        )
        per_epoch = len(self.tune.folds) == 1
        scores = []
        for step, fold in enumerate(self.tune.folds):
            history: list[float] = []

            def report(record: EpochRecord, fold: int = fold, history: list[float] = history) -> None:
                history.append(record.val_score)
                trial.set_user_attr(f"fold{fold}_val_{self.metric.name}", history)
                trial.set_user_attr("epoch_seconds", record.seconds)
                if per_epoch:
                    trial.report(record.val_score, record.epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(
                            f"pruned at epoch {record.epoch} (val_{self.metric.name} {record.val_score:.4f})"
                        )

            run = fit_fold(
                self.data,
                self.fold_of,
                fold,
                config,
                on_epoch=report,
                label=f"{self.label} trial {trial.number} fold {fold}",
                metric=self.metric,
            )
            scores.append(run.fit.best_val_score)
            trial.set_user_attr(f"fold_{self.metric.name}", scores)
            if not per_epoch:
                trial.report(run.fit.best_val_score, step)
                if step < len(self.tune.folds) - 1 and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {fold}")
        return float(np.mean(scores))


def run_study(
    backbone: str,
    data: Prepared,
    folds_path: Path,
    base: TrainConfig,
    tune: TuneConfig,
    metric: Metric,
    n_trials: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
    share_of: int = 1,
) -> optuna.Study:
    """Run trials: `n_trials` more, or (None) until the study holds `tune.n_trials` finished ones, of which
    this worker, one of `share_of` started together, runs its share."""
    fold_of = load_folds(folds_path, data.train_ids)
    url = storage or tune.storage_url()
    study = optuna.create_study(
        study_name=study_name(backbone, base, tune, data, folds_path, metric),
        storage=open_storage(url),
        direction="maximize" if metric.higher_is_better else "minimize",
        load_if_exists=True,
        pruner=make_pruner(tune),
        sampler=optuna.samplers.TPESampler(seed=tune.sampler_seed if seed is None else seed, n_startup_trials=3),
    )
    fail_stale_trials(study, tune.grace_seconds)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(untuned_values(base, tune.space), user_attrs={"untuned_default": True}, skip_if_exists=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if n_trials is None:
        missing = max(0, tune.n_trials - len(study.get_trials(deepcopy=False, states=finished)))
        n_trials = math.ceil(missing / share_of)
        callbacks = [optuna.study.MaxTrialsCallback(tune.n_trials, states=finished)]
    else:
        callbacks = []
    log.info("tune %s: study %s on %s, %d trial(s) to run", backbone, study.study_name, without_password(url), n_trials)
    if n_trials:
        study.optimize(
            Objective(data, fold_of, base, tune, metric, backbone),
            n_trials=n_trials,
            timeout=tune.timeout,
            catch=TRIAL_FAILURES,
            callbacks=callbacks + [lambda s, t: fail_stale_trials(s, tune.grace_seconds)],
        )
    return study


def study_summary(study: optuna.Study, backbone: str, url: str) -> dict:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise PipelineError(
            f"tune {backbone}: no trial of study {study.study_name} completed; see the FAIL reasons in "
            f"optuna-dashboard {without_password(url)}"
        )
    best = study.best_trial  # by the study's direction, the metric's
    default = next((t for t in complete if t.user_attrs.get("untuned_default")), None)
    return {
        "backbone": backbone,
        "enabled": True,
        "study": study.study_name,
        "storage": without_password(url),
        "best_params": best.params,
        "best_value": best.value,
        "best_trial": best.number,
        "untuned_value": default.value if default else None,
        "trials": {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState},
    }
