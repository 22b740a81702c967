"""Shared fixtures: a tiny synthetic competition on disk, its prepared dataset, and a config."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, DataConfig, FoldsConfig, SyntheticConfig, TrainConfig, config_from_dict
from pipeline.stages.prepare import prepare
from pipeline.stages.synthesize import write_competition

PROJECT = Path(__file__).resolve().parents[1]
FER2013 = PROJECT.parent / "shared" / "data" / "fer2013.zip"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the e2e project is slow: the session's first such test waits minutes for its `dvc repro`."""
    for item in items:
        if "e2e_project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def project_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def project_config() -> Config:
    return config_from_dict(project_params())


def data_config(**overrides) -> DataConfig:
    """The project's `data` settings with `overrides`; params.yaml is where every default lives."""
    return dataclasses.replace(project_config().data, **overrides)


def folds_config(**overrides) -> FoldsConfig:
    return dataclasses.replace(project_config().folds, **overrides)


# Tests pin the speed settings that `auto` would measure per machine (tests/test_speed.py covers `auto`),
# so their results do not depend on the machine's timing.
PINNED_SPEED = {"precision": "fp32", "channels_last": False}


def train_config(**overrides) -> TrainConfig:
    return dataclasses.replace(project_config().train, **{**PINNED_SPEED, **overrides})


def synthetic_config(**overrides) -> SyntheticConfig:
    return dataclasses.replace(project_config().synthetic, **overrides)


TINY = synthetic_config(seed=3, train_per_class=16, test_size=40, label_noise=0.0, duplicate_fraction=0.05)


def tiny_params(**sections: dict) -> dict:
    """The project's params.yaml shrunk to seconds of work; `sections` override whole keys."""
    params = project_params()
    # An easy task (little per-face variation, no label noise) that small nets learn in ~100 steps.
    params["synthetic"] = {
        **params["synthetic"],
        "train_per_class": 80,
        "test_size": 120,
        "seed": 1,
        "spread": 0.3,
        "label_noise": 0.0,
    }
    params["train"] = {
        **params["train"],
        "epochs": 8,
        "batch_size": 32,
        "warmup_epochs": 0,
        "lr": 0.003,
        "eval_batch_size": 128,
        **PINNED_SPEED,
    }
    params["backbones"] = {"resnet10t": {}, "resnet18": {}}
    params["tune"] = {**params["tune"], "n_trials": 2, "epochs": 2}
    # int8 calibration and its extra graphs cost every repro'd project time; the e2e project (E2E_PARAMS) keeps them
    params["export"] = {**params["export"], "calibration_images": 64, "latency_runs": 3, "int8": False}
    params.update(sections)
    return params


@pytest.fixture(scope="session")
def competition(tmp_path_factory) -> Path:
    """A tiny synthetic competition folder (with answers.csv beside it)."""
    root = tmp_path_factory.mktemp("synthetic") / "synthetic"
    write_competition(TINY, root)
    return root


@pytest.fixture(scope="session")
def prepared(competition, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(competition / "competition", config_from_dict(tiny_params()).data, out)
    return out


@pytest.fixture
def config() -> Config:
    return config_from_dict(tiny_params())


E2E_PARAMS = tiny_params()
# K = 2: every cross-fold path at two thirds of the runs; half-size batches keep the steps a fold model learns in.
E2E_PARAMS["folds"] = {**E2E_PARAMS["folds"], "ids": [0, 1]}
E2E_PARAMS["train"] = {**E2E_PARAMS["train"], "batch_size": 16}
# Two members of one small architecture (the second by `model:`, with its own seed): the ensemble, bundle and
# export of two backbones at the least training the suite's shared project can do.
E2E_PARAMS["backbones"] = {"resnet10t": {}, "resnet10t_seed1": {"model": "resnet10t", "seed": 1}}
E2E_PARAMS["export"] = {**E2E_PARAMS["export"], "int8": True}  # tests/test_export.py checks the int8 graphs
# And a student (distill@), fine-tuned from the second member's fold models on their probabilities and the test images.
E2E_PARAMS["distill"] = {
    **E2E_PARAMS["distill"],
    "teachers": ["resnet10t_seed1"],
    "students": {"resnet10t_student": {"model": "resnet10t", "epochs": 2}},
    "init_from": "resnet10t_seed1",
}
E2E_MEMBERS = [*E2E_PARAMS["backbones"], *E2E_PARAMS["distill"]["students"]]
# And a labelled holdout, scored by every fold model, on which the ensemble judges its blend.
E2E_PARAMS["data"] = {**E2E_PARAMS["data"], "holdout_fraction": 0.15}
# A user's shell: the project importable, nothing else from this process's environment.
PIPELINE_ENV = {"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"}


def ctrl_c_reaches_child() -> None:
    """Popen preexec_fn: a shell ignores SIGINT in what it starts in the background (`make test &`) and
    children inherit that, so a test that presses Ctrl-C restores the default for its child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_interruptible(command: list[str], cwd, env: dict, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`command` started as from a terminal, its output piped, so that the test can press Ctrl-C in it."""
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=ctrl_c_reaches_child
    )


def run_pipeline(*args: str, cwd) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in `cwd`, as a user would run it there."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=PIPELINE_ENV, capture_output=True, text=True
    )


def make_project(root: Path, params: dict, env: dict) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(PROJECT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
    ):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return root


def repro(root: Path, env: dict, *targets: str) -> str:
    """`dvc repro [targets]` in `root`; its output (the stages it ran)."""
    command = [sys.executable, "-m", "dvc", "repro", *targets]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc repro failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


# dvc.yaml's always_changed stages: every `dvc repro` runs them and `dvc status` lists them; what follows them
# re-runs only when their outputs change.
ALWAYS_RUN = {"pretrained"}


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(root: Path, copy: Path) -> Path:
    """A private copy of a DVC project that a test may change. The cache's content files are hard links: DVC names
    each by its content, keeps it read-only and never writes one in place, and copying the e2e project's cache
    costs half a gigabyte a test. The run cache and the workspace are copied."""
    cache = root / ".dvc" / "cache" / "files"

    def link_cache_copy_the_rest(source: str, target: str) -> None:
        if Path(source).is_relative_to(cache):
            os.link(source, target)
        else:
            shutil.copy2(source, target)

    return Path(shutil.copytree(root, copy, symlinks=True, copy_function=link_cache_copy_the_rest))


@pytest.fixture(scope="session")
def e2e_project(tmp_path_factory):
    """A fresh project folder where the real `dvc repro` ran on tiny params: (root, env, output).

    Shared by the end-to-end tests and the tests of the trained bundle (predict, video)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    root = make_project(tmp_path_factory.mktemp("e2e") / "project", E2E_PARAMS, env)
    output = repro(root, env)
    return root, env, output
