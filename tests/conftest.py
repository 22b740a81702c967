"""Shared fixtures: a tiny synthetic competition on disk, its prepared dataset, and a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import dataclasses

from pipeline.config import Config, DataConfig, FoldsConfig, SyntheticConfig, TrainConfig, config_from_dict
from pipeline.stages.prepare import prepare
from pipeline.stages.synthesize import write_competition

PROJECT = Path(__file__).resolve().parents[1]
FER2013 = PROJECT.parent / "shared" / "data" / "fer2013.zip"


def project_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def project_config() -> Config:
    return config_from_dict(project_params())


def data_config(**overrides) -> DataConfig:
    """The project's `data` settings with `overrides`; params.yaml is where every default lives."""
    return dataclasses.replace(project_config().data, **overrides)


def folds_config(**overrides) -> FoldsConfig:
    return dataclasses.replace(project_config().folds, **overrides)


def train_config(**overrides) -> TrainConfig:
    return dataclasses.replace(project_config().train, **overrides)


def synthetic_config(**overrides) -> SyntheticConfig:
    return dataclasses.replace(project_config().synthetic, **overrides)


TINY = synthetic_config(seed=3, train_per_class=16, test_size=40, label_noise=0.0, duplicate_fraction=0.05)


def tiny_params(**sections: dict) -> dict:
    """The project's params.yaml shrunk to seconds of work; `sections` override whole keys."""
    params = project_params()
    # An easy task (little per-face variation, no label noise) that small nets learn in ~100 steps.
    params["synthetic"] = {**params["synthetic"], "train_per_class": 80, "test_size": 120, "seed": 1, "spread": 0.3, "label_noise": 0.0}
    params["train"] = {**params["train"], "epochs": 8, "batch_size": 32, "warmup_epochs": 0, "lr": 0.003, "eval_batch_size": 128}
    params["backbones"] = {"resnet10t": {}, "resnet18": {}}
    params["tune"] = {**params["tune"], "n_trials": 2, "epochs": 2}
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

