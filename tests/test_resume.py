"""A train run killed with SIGKILL resumes from its checkpoint and ends exactly as an uninterrupted one.

The kill is placed by construction, not by timing: the child process wraps the checkpoint writer
and kills itself right after the checkpoint of epoch 2 is on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.config import config_from_dict
from pipeline.data import load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.groups import duplicate_groups
from pipeline.evaluation.splits import assign_folds
from pipeline.training import budget, models
from pipeline.training import resume as checkpoints
from pipeline.training.augment import Normalizer, make_train_loader
from pipeline.training.fold_run import fit_fold, fold_checkpoint
from pipeline.training.loop import fit
from pipeline.training.models import create_model
from pipeline.training.step import seed_everything
from tests.conftest import PROJECT, tiny_params
from tests.test_training import bars_dataset, halves

EPOCHS, KILL_AFTER = 4, 2
OUTPUTS = ("oof_plain.csv",)

# Runs `python -m pipeline ...` with the checkpoint writer wrapped: SIGKILL once epoch KILL_AFTER is saved.
KILLER = f"""
import os, signal, sys
from pipeline.training import resume
from pipeline.__main__ import main

save = resume.save

def save_then_die(where, state):
    save(where, state)
    if state["epoch"] == {KILL_AFTER}:
        os.kill(os.getpid(), signal.SIGKILL)

resume.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""

pytestmark = pytest.mark.slow  # real training runs, subprocesses and signals, seconds each


def train_params(**train: object) -> dict:
    """Every source of randomness on: dropout and drop-path (torch RNG), mixup/cutmix (numpy's), EMA;
    the weight average of the last 3 of 4 epochs, so the kill falls inside it, and smaller images in the first.

    The last epoch is kept, so the compared weights are trained after the resume; the best-epoch
    bookkeeping is checked in process (test_fit_resumes_the_best_epoch_bookkeeping).
    """
    params = tiny_params()
    params["train"].update(
        {
            "epochs": EPOCHS,
            "batch_size": 32,
            "drop_rate": 0.2,
            "drop_path_rate": 0.1,
            "mixup_alpha": 0.2,
            "cutmix_alpha": 1.0,
            "ema_decay": 0.9,
            "average_last_fraction": 0.75,
            "low_res_fraction": 0.25,
            "low_res_scale": 0.5,
            "keep_epoch": "last",
            **train,
        }
    )
    params["backbones"] = {"resnet10t": {}}
    return params


def make_workspace(root: Path, prepared: Path) -> Path:
    """params.yaml, folds.csv and the wrapper script, as the train stage sees them."""
    root.mkdir(parents=True, exist_ok=True)
    data = load_prepared(prepared)
    fold = assign_folds(data.train_labels, duplicate_groups(data.train_images), config_from_dict(tiny_params()).folds)
    pd.DataFrame({"id": data.train_ids, "fold": fold}).to_csv(root / "folds.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(train_params()))
    (root / "killer.py").write_text(KILLER)
    return root


def train(
    workspace: Path, prepared: Path, out: str, checkpoints_dir: str, params: str = "params.yaml", killer: bool = False
) -> tuple[int, str]:
    """Run the train stage for resnet10t fold 0 in a child process; its exit status and output."""
    entry = [str(workspace / "killer.py")] if killer else ["-m", "pipeline"]
    stage = ["train", *"--backbone resnet10t --fold 0 --folds folds.csv".split(), "--data", str(prepared), "--out", out]
    command = [sys.executable, *entry, *stage, "--checkpoints", checkpoints_dir, "--params", params]
    log = workspace / f"{out}.log"
    # Output to a file, not a pipe: a killed run's loader processes (augment_on: loader) may outlive it for a moment.
    with open(log, "w") as handle:
        done = subprocess.run(
            command,
            cwd=workspace,
            env=dict(os.environ, PYTHONPATH=str(PROJECT)),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    return done.returncode, log.read_text()


@pytest.fixture(scope="module")
def killed(prepared, tmp_path_factory) -> tuple[Path, int, str]:
    """A workspace whose run was killed right after its epoch-2 checkpoint: (workspace, status, output)."""
    workspace = make_workspace(tmp_path_factory.mktemp("resume") / "killed", prepared)
    status, output = train(workspace, prepared, "out_killed", "ckpt_killed", killer=True)
    return workspace, status, output


def copy_killed_checkpoints(killed, to: Path) -> Path:
    workspace, _, _ = killed
    shutil.copytree(workspace / "ckpt_killed", to / "ckpt")
    shutil.copy(workspace / "folds.csv", to / "folds.csv")
    shutil.copy(workspace / "params.yaml", to / "params.yaml")
    return to


def epochs_run(output: str) -> list[int]:
    return [
        int(line.split(" epoch ")[1].split("/")[0]) for line in output.splitlines() if "resnet10t fold 0 epoch " in line
    ]


def test_sigkill_leaves_no_output_and_the_checkpoint_of_the_last_finished_epoch(killed):
    workspace, status, output = killed
    assert status == -signal.SIGKILL, output
    assert epochs_run(output) == [1, 2]
    assert not (workspace / "out_killed").exists()
    (saved,) = (workspace / "ckpt_killed").iterdir()  # no temporary file beside it
    assert saved.name.startswith("resnet10t-fold0-") and saved.suffix == ".pt"


def test_resumed_run_ends_exactly_as_an_uninterrupted_one(killed, prepared, tmp_path):
    workspace = copy_killed_checkpoints(killed, tmp_path)
    (saved,) = (workspace / "ckpt").iterdir()
    status, output = train(workspace, prepared, "out_resumed", "ckpt")
    assert status == 0, output
    assert f"resnet10t fold 0: resuming after epoch {KILL_AFTER} of {EPOCHS} from ckpt/{saved.name}" in output
    assert epochs_run(output) == [3, 4]
    assert not saved.exists()  # deleted once the outputs are written

    status, straight = train(workspace, prepared, "out_straight", "ckpt_straight")
    assert status == 0, straight
    assert "resuming" not in straight and epochs_run(straight) == [1, 2, 3, 4]
    resumed, uninterrupted = workspace / "out_resumed", workspace / "out_straight"
    weights, expected = load_file(resumed / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    for name in OUTPUTS:
        assert (resumed / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    # Every figure but the timings.
    figures = ["epoch", "train_loss", "val_loss", "val_acc", "lr"]
    history = pd.read_csv(resumed / "history.csv")[figures]
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history.equals(pd.read_csv(uninterrupted / "history.csv")[figures])
    assert list((workspace / "ckpt_straight").iterdir()) == []
    # The run's time counts the epochs trained before the kill too (the report's training minutes).
    seconds = json.loads((resumed / "run.json").read_text())["seconds"]
    assert seconds >= pd.read_csv(resumed / "history.csv")["seconds"].sum()


def test_checkpoint_of_other_settings_is_not_resumed(killed, prepared, tmp_path):
    workspace = copy_killed_checkpoints(killed, tmp_path)
    (stale,) = (workspace / "ckpt").iterdir()
    (workspace / "other.yaml").write_text(yaml.safe_dump(train_params(lr=0.002)))
    status, output = train(workspace, prepared, "out_other", "ckpt", params="other.yaml")
    assert status == 0, output
    assert "resuming" not in output and "starting fresh" in output and stale.name in output
    assert epochs_run(output) == [1, 2, 3, 4]
    assert pd.read_csv(workspace / "out_other" / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert list((workspace / "ckpt").iterdir()) == [stale]  # the other run's file is left alone; this run's is gone


def test_checkpoint_key_follows_settings_data_and_folds(prepared, tmp_path):
    data = load_prepared(prepared)
    config = config_from_dict(train_params()).backbone("resnet10t")
    fold_of = np.arange(len(data.train_ids)) % 3
    base = fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config)
    assert base == fold_checkpoint(tmp_path, "resnet10t", data, fold_of.copy(), 0, config)
    moved = fold_of.copy()
    moved[[0, 1]] = moved[[1, 0]]
    others = [
        fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, dataclasses.replace(config, lr=config.lr * 2)),
        fold_checkpoint(tmp_path, "resnet10t", dataclasses.replace(data, fingerprint="other data"), fold_of, 0, config),
        fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 1, config),
        fold_checkpoint(tmp_path, "resnet10t", data, moved, 0, config),
    ]
    assert len({base.key, *(other.key for other in others)}) == 5
    assert len({base.path, *(other.path for other in others)}) == 5
    # A file under the right name but written for another key is not resumed.
    checkpoints.save(dataclasses.replace(base, key=others[0].key), {"epoch": 1})
    assert checkpoints.load(base) is None
    checkpoints.save(base, {"epoch": 1})
    assert checkpoints.load(base) == {"epoch": 1}


class Interrupt(Exception):
    pass


def test_fit_resumes_the_best_epoch_bookkeeping(tmp_path):
    """In process: a fit stopped after epoch 2's checkpoint and fitted again equals one uninterrupted fit."""
    images, labels = bars_dataset(96, np.random.default_rng(4))
    config = config_from_dict(
        train_params(batch_size=16, workers=0, keep_epoch="best", average_last_fraction=0.0)
    ).backbone("resnet10t")
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    where = checkpoints.Checkpoint(tmp_path / "fit.pt", "some key")

    def run(checkpoint=None, stop_after=None):
        def stop(record):
            if record.epoch == stop_after:
                raise Interrupt

        seed_everything(0)
        model = create_model(config, in_chans=1, num_classes=2)
        return fit(
            model, *halves(images, labels, 64), config, normalize, 2, on_epoch=stop, seed=0, checkpoint=checkpoint
        )

    with pytest.raises(Interrupt):
        run(where, stop_after=KILL_AFTER)
    assert checkpoints.load(where)["epoch"] == KILL_AFTER
    resumed, uninterrupted = run(where), run()
    assert (resumed.best_epoch, resumed.best_val_score) == (uninterrupted.best_epoch, uninterrupted.best_val_score)
    assert [dataclasses.astuple(r)[:5] for r in resumed.history] == [
        dataclasses.astuple(r)[:5] for r in uninterrupted.history
    ]
    expected = uninterrupted.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.model.state_dict().items())


def augmented_epochs(workers: int, epochs: list[int], seed: int = 5) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    images = np.random.default_rng(0).integers(0, 255, (70, 24, 24), dtype=np.uint8)
    config = config_from_dict(train_params(batch_size=16, workers=workers, augment_on="loader")).backbone("resnet10t")
    assert config.augment, (
        "params.yaml's augmentations, run per image in the loader's processes, are what this test exercises"
    )
    loader = make_train_loader(images, np.arange(70), config, seed=seed)
    drawn = []
    for epoch in epochs:  # one loader for all epochs: worker processes persist across them
        loader.batch_sampler.set_epoch(epoch)
        drawn.append(list(loader))
    return drawn


def same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_batches_depend_on_seed_and_epoch_only_not_on_loader_processes():
    in_process = augmented_epochs(workers=0, epochs=[1, 2])
    one_worker = augmented_epochs(workers=1, epochs=[1, 2])
    resumed = augmented_epochs(workers=1, epochs=[2])  # a fresh worker starting at epoch 2
    assert same(in_process[0], one_worker[0]) and same(in_process[1], one_worker[1])
    assert same(in_process[1], resumed[0])
    first, second = in_process
    assert len(first) == 70 // 16 and all(
        x.shape == (16, 24, 24) and x.dtype == torch.uint8 for x, _ in first
    )  # full batches only
    assert len({int(label) for _, labels in first for label in labels}) == 64  # no image twice in an epoch
    assert not same(first, second)
    assert not torch.equal(first[0][1], second[0][1])  # another order
    assert not same(first, augmented_epochs(workers=0, epochs=[1], seed=6)[0])


def test_training_set_smaller_than_a_batch_is_refused_before_any_model_is_built(prepared, monkeypatch):
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 3
    config = dataclasses.replace(config_from_dict(train_params()).backbone("resnet10t"), batch_size=512)
    monkeypatch.setattr(models, "create_model", lambda *a, **k: pytest.fail("a model was built"))
    training = int((fold_of != 0).sum())
    with pytest.raises(
        PipelineError,
        match=rf"resnet10t fold 0 has {training} training images, fewer than batch_size=512.*"
        r"train\.batch_size.*backbones\.<name>\.batch_size",
    ):
        fit_fold(data, fold_of, 0, config, label="resnet10t fold 0")


def test_budgeted_run_resumes_with_the_epochs_it_planned(prepared, tmp_path, monkeypatch):
    """In process: a budgeted fit_fold stopped after epoch 1 trains, when run again, the stored plan's epochs."""
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 3
    config = config_from_dict(train_params(workers=0, time_budget_minutes=1e6)).backbone(
        "resnet10t"
    )  # ample: EPOCHS planned
    checkpoint = fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config)

    def stop_after_first(record):
        if record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_fold(data, fold_of, 0, config, on_epoch=stop_after_first, checkpoint=checkpoint)
    stored = checkpoints.load_plan(checkpoint)
    assert stored["epochs"] == EPOCHS and checkpoints.load(checkpoint)["epoch"] == 1
    assert checkpoints.load_plan(dataclasses.replace(checkpoint, key="another run")) is None
    # As if the interrupted run had measured a slower machine: the resumed run keeps that plan, it does not measure.
    checkpoints.save_plan(checkpoint, {**stored, "epochs": EPOCHS - 2})
    monkeypatch.setattr(budget, "plan_epochs", lambda *args, **kwargs: pytest.fail("the resumed run measured again"))
    run = fit_fold(data, fold_of, 0, config, checkpoint=checkpoint)
    assert run.plan.epochs == EPOCHS - 2 and run.fit.resumed_epochs == 1
    assert [record.epoch for record in run.fit.history] == list(range(1, EPOCHS - 1))
    checkpoints.remove(checkpoint)
    assert list(tmp_path.iterdir()) == []  # the plan goes with its checkpoint
