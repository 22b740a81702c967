"""Tuning with real Optuna storages: journal file, SQLite, PostgreSQL (when CI provides one)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from pipeline.config import config_from_dict
from pipeline.data import load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.groups import duplicate_groups
from pipeline.evaluation.metrics import ACCURACY, METRICS, Metric
from pipeline.evaluation.splits import assign_folds
from pipeline.training.tuning import Objective, fail_stale_trials, open_storage, run_study, study_name, study_summary
from tests.conftest import PROJECT, start_interruptible, tiny_params

POSTGRES_ENV = "PIPELINE_TEST_POSTGRES_URL"
SPACE = {"lr": {"low": 0.001, "high": 0.01, "log": True}, "label_smoothing": {"low": 0.0, "high": 0.2}}

pytestmark = pytest.mark.slow  # real training runs, subprocesses and signals, seconds each


def tune_params(storage: str, **tune: object) -> dict:
    params = tiny_params()
    params["train"].update(epochs=2, workers=0)
    params["backbones"] = {"resnet10t": {}}
    params["tune"] = {
        **params["tune"],
        "enabled": True,
        "n_trials": 2,
        "epochs": 2,
        "folds": [0],
        "space": SPACE,
        "storage": storage,
        "heartbeat_seconds": 0.5,
        "grace_seconds": 3,
        **tune,
    }
    return params


@pytest.fixture
def workspace(prepared, tmp_path):
    """A folder with params.yaml, the prepared data and a folds file, as the tune stage sees it."""
    data = load_prepared(prepared)
    fold = assign_folds(data.train_labels, duplicate_groups(data.train_images), config_from_dict(tiny_params()).folds)
    pd.DataFrame({"id": data.train_ids, "fold": fold}).to_csv(tmp_path / "folds.csv", index=False)
    return tmp_path


def write_params(workspace: Path, params: dict) -> Path:
    path = workspace / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# `python -m pipeline tune ...` whose first trial, once its first epoch is reported, touches a marker file
# and waits there for ever: a signal sent after the marker appears always lands in a running trial.
HELD_WORKER = """
import sys, time
from pathlib import Path
import pipeline.training.tuning as tune
from pipeline.__main__ import main

marker, fit_fold = Path(sys.argv[1]), tune.fit_fold

def held_fit_fold(*args, on_epoch, **kwargs):
    def report_then_hold(record):
        on_epoch(record)
        marker.touch()
        while True:
            time.sleep(1)
    return fit_fold(*args, on_epoch=report_then_hold, **kwargs)

tune.fit_fold = held_fit_fold
sys.exit(main(["tune", *sys.argv[2:]]))
"""


def start_worker(
    workspace: Path, prepared: Path, n_trials: int, storage: str | None = None, hold_at: Path | None = None
) -> subprocess.Popen:
    """A tune worker in its own process; with `hold_at`, one that holds its first trial (see HELD_WORKER)."""
    options = ["--backbone", "resnet10t", "--n-trials", str(n_trials), "--data", str(prepared), "--folds", "folds.csv"]
    options += ["--storage", storage] if storage else []
    entry = ["-c", HELD_WORKER, str(hold_at)] if hold_at else ["-m", "pipeline", "tune"]
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    return start_interruptible([sys.executable, *entry, *options], workspace, env, stderr=subprocess.STDOUT)


def load_study(url: str) -> optuna.Study:
    storage = open_storage(url)
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def run_here(
    workspace: Path, prepared: Path, params: dict, n_trials: int | None = None, metric: Metric = ACCURACY
) -> optuna.Study:
    config = config_from_dict(params)
    return run_study(
        "resnet10t",
        load_prepared(prepared),
        workspace / "folds.csv",
        config.backbone("resnet10t"),
        config.tune,
        metric,
        n_trials=n_trials,
    )


def test_study_starts_from_the_untuned_setting_and_records_epochs(workspace, prepared):
    url = str(workspace / "optuna.journal")
    params = tune_params(url, n_trials=3)
    study = run_here(workspace, prepared, params)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    first = trials[0]
    assert first.user_attrs["untuned_default"] is True
    assert first.params == {"lr": params["train"]["lr"], "label_smoothing": params["train"]["label_smoothing"]}
    assert len(first.user_attrs["fold0_val_accuracy"]) == 2 and "epoch_seconds" in first.user_attrs
    summary = study_summary(study, "resnet10t", url)
    assert set(summary["best_params"]) == set(SPACE) and summary["untuned_value"] == first.value


def test_rerun_continues_the_study_and_new_data_starts_a_new_one(workspace, prepared):
    url = str(workspace / "optuna.journal")
    run_here(workspace, prepared, tune_params(url, n_trials=1))
    study = run_here(workspace, prepared, tune_params(url, n_trials=2))
    assert len(study.get_trials()) == 2
    assert len(optuna.get_all_study_summaries(open_storage(url))) == 1
    config = config_from_dict(tune_params(url))
    data = load_prepared(prepared)
    other = dataclasses.replace(data, fingerprint="another-dataset")
    base = config.backbone("resnet10t")
    folds = workspace / "folds.csv"
    assert study_name("resnet10t", base, config.tune, data, folds, ACCURACY) == study.study_name
    assert study_name("resnet10t", base, config.tune, other, folds, ACCURACY) != study.study_name
    assert study_name("resnet10t", base, config.tune, data, folds, METRICS["macro_f1"]) != study.study_name
    # The full run's epochs do not enter a trial (tune.epochs does): the study carries on.
    longer = dataclasses.replace(base, epochs=base.epochs + 5)
    assert study_name("resnet10t", longer, config.tune, data, folds, ACCURACY) == study.study_name


def test_pruned_trial_stops_at_the_epoch_it_is_pruned(workspace, prepared):
    config = config_from_dict(tune_params("unused", epochs=3))
    data = load_prepared(prepared)
    fold_of = pd.read_csv(workspace / "folds.csv")["fold"].to_numpy()
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(Objective(data, fold_of, config.backbone("resnet10t"), config.tune, ACCURACY, "t"), n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED and len(trial.user_attrs["fold0_val_accuracy"]) == 1


def test_a_time_budget_neither_shortens_a_trial_nor_starts_a_new_study(workspace, prepared):
    params = tune_params("unused", epochs=2)
    params["train"]["time_budget_minutes"] = 1e-6  # applied, it would allow 1 epoch
    config = config_from_dict(params)
    base, data = config.backbone("resnet10t"), load_prepared(prepared)
    fold_of = pd.read_csv(workspace / "folds.csv")["fold"].to_numpy()
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(data, fold_of, base, config.tune, ACCURACY, "t"), n_trials=1)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and len(trial.user_attrs["fold0_val_accuracy"]) == 2
    unbudgeted = dataclasses.replace(base, time_budget_minutes=None)
    folds = workspace / "folds.csv"
    assert study_name("resnet10t", base, config.tune, data, folds, ACCURACY) == study_name(
        "resnet10t", unbudgeted, config.tune, data, folds, ACCURACY
    )


@pytest.mark.parametrize("metric, direction", [("accuracy", "MAXIMIZE"), ("log_loss", "MINIMIZE")])
def test_several_folds_report_one_value_per_fold_of_the_competitions_metric(workspace, prepared, metric, direction):
    params = tune_params(str(workspace / f"{metric}.journal"), n_trials=1, folds=[0, 1], epochs=1)
    study = run_here(workspace, prepared, params, metric=METRICS[metric])
    (trial,) = study.get_trials()
    assert sorted(trial.intermediate_values) == [0, 1] and study.direction.name == direction
    assert trial.value == pytest.approx(np.mean(trial.user_attrs[f"fold_{metric}"]))
    assert type(study.pruner).__name__ == "WilcoxonPruner"


def test_failing_trials_are_recorded_with_their_reason_and_the_study_goes_on(workspace, prepared):
    params = tune_params(
        str(workspace / "optuna.journal"), n_trials=2, space={"label_smoothing": {"low": 0.0, "high": 0.0}}
    )
    params["train"].update(lr=1.0e6, label_smoothing=0.0)
    study = run_here(workspace, prepared, params)
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert all("lower lr" in t.user_attrs["fail_reason"] for t in trials)
    with pytest.raises(PipelineError, match="no trial of study"):
        study_summary(study, "resnet10t", str(workspace / "optuna.journal"))


def two_workers_share(workspace: Path, prepared: Path, url: str) -> None:
    write_params(workspace, tune_params(url))
    workers = [start_worker(workspace, prepared, n_trials=2, storage=url) for _ in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, output
    trials = load_study(url).get_trials()
    assert len(trials) == 4
    by_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert sorted(by_worker.tolist()) == [2, 2]


def test_two_workers_share_a_journal_file(workspace, prepared):
    two_workers_share(workspace, prepared, str(workspace / "optuna.journal"))


def test_two_workers_share_sqlite(workspace, prepared):
    two_workers_share(workspace, prepared, f"sqlite:///{workspace / 'optuna.db'}")


@pytest.mark.skipif(
    not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to a PostgreSQL URL to run (.ci/run does)"
)
def test_two_workers_share_postgresql(workspace, prepared):
    url = os.environ[POSTGRES_ENV]
    storage = open_storage(url)
    for summary in optuna.get_all_study_summaries(storage):
        optuna.delete_study(study_name=summary.study_name, storage=storage)
    two_workers_share(workspace, prepared, url)


def wait_until_held(marker: Path, worker: subprocess.Popen, timeout: float = 300) -> None:
    """Until the held worker's trial has reported an epoch (the timeout only guards a hung test)."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert worker.poll() is None, worker.stdout.read()
        assert time.time() < deadline, "the worker never reported an epoch"
        time.sleep(0.2)


def test_killed_worker_leaves_no_trial_running_for_ever(workspace, prepared):
    url = str(workspace / "optuna.journal")
    params = tune_params(url)
    write_params(workspace, params)
    worker = start_worker(workspace, prepared, n_trials=1, hold_at=workspace / "held")
    wait_until_held(workspace / "held", worker)
    worker.kill()
    worker.wait()
    study = load_study(url)
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 1
    assert fail_stale_trials(study, grace_seconds=3600) == []  # its heartbeat is recent: not yet given up
    time.sleep(params["tune"]["grace_seconds"] + 0.5)
    assert fail_stale_trials(study, params["tune"]["grace_seconds"]) == [0]
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and "heartbeat" in trial.user_attrs["fail_reason"]


def test_ctrl_c_leaves_the_study_usable(workspace, prepared):
    url = str(workspace / "optuna.journal")
    write_params(workspace, tune_params(url))
    worker = start_worker(workspace, prepared, n_trials=1, hold_at=workspace / "held")
    wait_until_held(workspace / "held", worker)
    worker.send_signal(signal.SIGINT)
    try:
        output, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()  # a no-op once it has ended; a hung one must not outlive the test
    assert worker.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert load_study(url).get_trials()[0].state == TrialState.FAIL
    again = start_worker(workspace, prepared, n_trials=1)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert [t.state for t in load_study(url).get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_pipelines_study(workspace, prepared):
    url = str(workspace / "optuna.journal")
    study = run_here(workspace, prepared, tune_params(url, n_trials=1, epochs=1))
    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer"
        (served,) = studies
        assert served["study_name"] == study.study_name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{served['study_id']}", timeout=5) as response:
            detail = json.load(response)
        assert detail["name"] == study.study_name
        (trial,) = detail["trials"]
        assert {attr["key"] for attr in trial["user_attrs"]} >= {
            "fold0_val_accuracy",
            "epoch_seconds",
            "untuned_default",
        }
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
