import copy
import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.data import Rows, Split, load_prepared
from pipeline.evaluation.metrics import ACCURACY, METRICS, accuracy
from pipeline.files import read_json
from pipeline.training import budget, loop
from pipeline.training import resume as checkpoints
from pipeline.training.augment import EpochBatches, Normalizer
from pipeline.training.budget import EpochPlan, budget_plan, plan_epochs, replan_after_first_epoch
from pipeline.training.fold_outputs import write_fold_outputs
from pipeline.training.fold_run import fit_fold, fold_checkpoint, fold_split
from pipeline.training.loop import NonFiniteLoss, fit
from pipeline.training.models import create_model, pick_device
from pipeline.training.predict import predict
from pipeline.training.step import TrainStep, low_res_epochs, seed_everything
from tests.conftest import train_config


def halves(images: np.ndarray, labels: np.ndarray, at: int) -> tuple[Split, Split]:
    """The images before `at` to train on, the rest to score."""
    return Split(images[:at], labels[:at]), Split(images[at:], labels[at:])


def bars_dataset(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright horizontal bar; class 1: a vertical one. Learnable in a few steps."""
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
    for image, label, where in zip(images, labels, rng.integers(3, 13, n)):
        if label == 0:
            image[where - 1 : where + 2, :] = 255
        else:
            image[:, where - 1 : where + 2] = 255
    return images, labels


CONFIG = train_config(model="resnet10t", epochs=3, batch_size=16, lr=0.003, warmup_epochs=0, workers=0, augment=())


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_fit_learns_keeps_the_best_epoch_by_the_competitions_metric_and_reports_every_epoch(metric):
    rng = np.random.default_rng(0)
    images, labels = bars_dataset(160, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, epochs=4, keep_epoch="best")
    seen = []
    seed_everything(0)
    model = create_model(config, in_chans=1, num_classes=2)
    result = fit(model, *halves(images, labels, 120), config, normalize, 2, METRICS[metric], on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    scores = [r.val_acc if metric == "accuracy" else r.val_loss for r in seen]
    assert [r.val_score for r in seen] == pytest.approx(scores)
    best = int(np.argmax(scores) if metric == "accuracy" else np.argmin(scores))
    assert (result.best_epoch, result.best_val_score) == (best + 1, pytest.approx(scores[best]))
    probs = predict(result.model, images[120:], normalize, config, views=({}, {"hflip": True}))[0]
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert accuracy(probs, labels[120:]) >= 0.8  # chance is 0.5


def test_weight_average_keeps_the_mean_of_the_last_epochs_weights_and_scores_it(tmp_path, monkeypatch):
    images, labels = bars_dataset(96, np.random.default_rng(5))
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, epochs=4, keep_epoch="last", average_last_fraction=0.5)  # epochs 3 and 4
    weights_after = []  # the trained weights at the end of each epoch, as the checkpoint holds them
    save = checkpoints.save
    monkeypatch.setattr(
        checkpoints,
        "save",
        lambda where, state: (weights_after.append(copy.deepcopy(state["step"]["model"])), save(where, state)),
    )
    seed_everything(0)
    result = fit(
        create_model(config, 1, 2),
        *halves(images, labels, 64),
        config,
        normalize,
        2,
        checkpoint=checkpoints.Checkpoint(tmp_path / "run.pt", "key"),
    )
    assert len(weights_after) == 4
    kept = result.model.state_dict()
    for name, value in kept.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (weights_after[2][name] + weights_after[3][name]) / 2)
        else:
            assert torch.equal(value, weights_after[3][name])  # counters: the last epoch's
    assert not torch.equal(kept["fc.weight"], weights_after[3]["fc.weight"])
    # The figure reported for the last epoch, and kept, is the averaged model's.
    probs = predict(result.model, images[64:], normalize, config, views=({},))[0]
    assert result.best_val_score == result.history[-1].val_acc == accuracy(probs, labels[64:])


@pytest.mark.parametrize(
    "fraction, total, averaged", [(0.0, 9, []), (0.25, 9, [8, 9]), (0.01, 9, [9]), (1.0, 3, [1, 2, 3])]
)
def test_weight_average_covers_the_last_fraction_of_the_epochs_and_at_least_one(fraction, total, averaged):
    assert [epoch for epoch in range(1, total + 1) if loop.WeightAverage(fraction).covers(epoch, total)] == averaged


@pytest.mark.parametrize(
    "fraction, total, low", [(0.0, 9, 0), (0.5, 9, 4), (0.5, 1, 0), (0.9, 4, 3), (0.1, 4, 1), (0.1, 2, 1)]
)
def test_low_res_epochs_are_the_fraction_at_the_start_rounded_down_at_least_one_and_never_the_last(
    fraction, total, low
):
    assert low_res_epochs(fraction, total) == low


def test_progressive_resizing_trains_the_first_epochs_on_smaller_images_and_scores_full_size():
    images, labels = bars_dataset(64, np.random.default_rng(6))
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, epochs=4, low_res_fraction=0.5, low_res_scale=0.5)
    model = create_model(config, 1, 2)
    sides = {True: [], False: []}  # training: the side of every training batch; False: of every scored one
    model.register_forward_pre_hook(lambda module, args: sides[module.training].append(args[0].shape[-1]))
    fit(model, Split(images, labels), Split(images, labels), config, normalize, 2)
    steps = len(sides[True]) // 4
    assert sides[True] == [8] * 2 * steps + [16] * 2 * steps  # epochs 1-2 at half the side, 3-4 whole
    assert set(sides[False]) == {16}


def test_eval_every_scores_only_every_nth_and_the_last_epoch():
    rng = np.random.default_rng(3)
    images, labels = bars_dataset(64, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, epochs=5, eval_every=2)
    seen = []
    result = fit(
        create_model(config, 1, 2),
        Split(images, labels),
        Split(images, labels),
        config,
        normalize,
        2,
        on_epoch=seen.append,
    )
    assert [r.epoch for r in seen] == [2, 4, 5]
    assert [np.isnan(r.val_acc) for r in result.history] == [True, False, True, False, False]
    assert result.best_epoch in (2, 4, 5)


def test_every_epoch_draws_its_own_batches(monkeypatch):
    rng = np.random.default_rng(4)
    images, labels = bars_dataset(48, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    epochs = []
    set_epoch = EpochBatches.set_epoch
    monkeypatch.setattr(EpochBatches, "set_epoch", lambda self, epoch: (epochs.append(epoch), set_epoch(self, epoch)))
    fit(create_model(CONFIG, 1, 2), Split(images, labels), Split(images, labels), CONFIG, normalize, 2)
    assert epochs == [1, 2, 3]


def test_on_epoch_can_stop_training_early():
    rng = np.random.default_rng(1)
    images, labels = bars_dataset(64, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)

    class Stop(Exception):
        pass

    def stop_after_first(record):
        raise Stop(record.epoch)

    with pytest.raises(Stop, match="1"):
        fit(
            create_model(CONFIG, 1, 2),
            Split(images, labels),
            Split(images, labels),
            CONFIG,
            normalize,
            2,
            on_epoch=stop_after_first,
        )


def test_sgd_nesterov_is_the_optimizer_the_config_names_and_learns():
    rng = np.random.default_rng(1)
    images, labels = bars_dataset(160, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, optimizer="sgd", lr=0.05, weight_decay=1e-4)
    step = TrainStep(create_model(config, 1, 2), config, normalize, num_classes=2, steps_per_epoch=8)
    assert isinstance(step.optimizer, torch.optim.SGD)
    assert step.optimizer.defaults["nesterov"] and step.optimizer.defaults["momentum"] == 0.9
    seed_everything(0)
    result = fit(create_model(config, 1, 2), *halves(images, labels, 120), config, normalize, 2)
    assert result.best_val_score >= 0.8  # chance is 0.5


def test_diverging_training_raises_a_clear_error():
    rng = np.random.default_rng(2)
    images, labels = bars_dataset(64, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = train_config(
        model="resnet10t", epochs=2, batch_size=16, lr=1e6, warmup_epochs=0, workers=0, augment=(), label_smoothing=0.0
    )
    with pytest.raises(NonFiniteLoss, match="lower lr"):
        fit(create_model(config, 1, 2), Split(images, labels), Split(images, labels), config, normalize, 2)


def test_budget_plan_fits_the_epochs_left_after_the_probe_and_the_final_predictions():
    # (600 s - 5 s probing - 12 s predicting) / 24.1 s per epoch = 24.2 epochs
    assert budget_plan(600, 5, 24.1, 12, max_epochs=30) == EpochPlan(24, 24.1, 12, 600)
    assert budget_plan(600, 5, 24.1, 12, max_epochs=10).epochs == 10  # train.epochs is the upper bound


def test_budget_that_fits_no_epoch_trains_one_and_says_what_to_change(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.training.budget"):
        plan = budget_plan(30, 5, 24.1, 12, max_epochs=30, label="resnet10t fold 0")
    assert plan.epochs == 1
    assert "resnet10t fold 0: the time budget of 30 s" in caplog.text and "24.1 s per epoch measured" in caplog.text
    assert "Raise time_budget_minutes" in caplog.text


def test_first_epoch_replans_with_its_own_time_and_the_budget_left():
    probe = EpochPlan(29, 65.0, 12, 1980, scoring_seconds_per_epoch=5.0)
    # 1 + (1980 s - 120 s spent - 12 s predicting) / (50 s training + 5 s scoring) = 1 + 33.6
    assert replan_after_first_epoch(probe, 50.0, 120, max_epochs=200) == EpochPlan(
        34, 55.0, 12, 1980, 5.0, probe_seconds_per_epoch=65.0
    )
    assert (
        replan_after_first_epoch(probe, 50.0, 120, max_epochs=20).epochs == 20
    )  # train.epochs is still the upper bound
    assert replan_after_first_epoch(probe, 5000.0, 120, max_epochs=200).epochs == 1  # the first epoch alone used it up


def test_a_first_epoch_on_smaller_images_replans_as_the_full_size_epoch_it_stands_for():
    probe = EpochPlan(29, 45.0, 12, 1980, scoring_seconds_per_epoch=5.0, low_res_time_ratio=0.5)
    # 25 s on half-time steps is 50 s at full size; half the epochs at half the time: 37.5 s + 5 s scoring an epoch,
    # 1 + (1980 s - 120 s spent - 12 s predicting) / 42.5 s = 1 + 43.5
    replanned = replan_after_first_epoch(probe, 25.0, 120, max_epochs=200, low_res_fraction=0.5)
    assert replanned == EpochPlan(44, 42.5, 12, 1980, 5.0, probe_seconds_per_epoch=45.0, low_res_time_ratio=0.5)
    # planned at 1 epoch, the first trained at full size: 50 s stands for itself
    assert (
        replan_after_first_epoch(
            dataclasses.replace(probe, epochs=1), 50.0, 120, max_epochs=200, low_res_fraction=0.5
        ).epochs
        == 44
    )


# Every global generator in play (init, dropout, drop-path, mixup), so a probe that moved one would show.
BUDGETED = train_config(
    model="resnet10t",
    epochs=3,
    batch_size=16,
    warmup_epochs=0,
    workers=0,
    eval_batch_size=64,
    drop_rate=0.2,
    drop_path_rate=0.1,
    mixup_alpha=0.2,
)


def test_plan_epochs_measures_the_run_and_clips_to_one_and_to_train_epochs(prepared, caplog):
    data = load_prepared(prepared)
    train_index, valid_index = fold_split(np.arange(len(data.train_ids)) % 3, 0)
    normalize = Normalizer(data.pixel_mean, data.pixel_std, None, pick_device(), False)
    ample = plan_epochs(data, train_index, valid_index, BUDGETED, normalize, budget_seconds=1e9)
    assert ample.epochs == BUDGETED.epochs and ample.seconds_per_epoch > 0 and ample.predict_seconds > 0
    with caplog.at_level(logging.WARNING, logger="pipeline.training.budget"):
        scant = plan_epochs(data, train_index, valid_index, BUDGETED, normalize, budget_seconds=1e-3, label="scant")
    assert scant.epochs == 1 and "scant: the time budget" in caplog.text


def test_plan_epochs_times_steps_on_the_smaller_images_of_a_progressive_run(prepared, monkeypatch):
    data = load_prepared(prepared)
    train_index, valid_index = fold_split(np.arange(len(data.train_ids)) % 3, 0)
    normalize = Normalizer(data.pixel_mean, data.pixel_std, None, pick_device(), False)
    shrunk = []  # the side of every batch the probe shrank
    shrink = TrainStep._shrink
    monkeypatch.setattr(TrainStep, "_shrink", lambda self, x: shrunk.append(x.shape[-1]) or shrink(self, x))
    progressive = plan_epochs(
        data, train_index, valid_index, dataclasses.replace(BUDGETED, low_res_fraction=0.5), normalize, 1e9
    )
    assert shrunk  # the second round of the probe's steps trained on smaller images
    assert math.isfinite(progressive.low_res_time_ratio) and progressive.low_res_time_ratio > 0
    shrunk.clear()
    assert (
        plan_epochs(data, train_index, valid_index, BUDGETED, normalize, 1e9).low_res_time_ratio == 1.0 and not shrunk
    )


@pytest.mark.slow
@pytest.mark.parametrize("low_res_fraction", [0.0, 0.5])
def test_a_probe_that_misjudged_is_corrected_by_the_first_epoch_and_the_run_is_the_unbudgeted_one(
    prepared, tmp_path, monkeypatch, low_res_fraction
):
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 3
    config = dataclasses.replace(
        BUDGETED,
        epochs=4,
        warmup_epochs=1,
        time_budget_minutes=1e6,  # ample: 4 fit
        low_res_fraction=low_res_fraction,
    )  # 0.5: epoch 1 of the 2 probed, then 1-2 of 4, on smaller images
    monkeypatch.setattr(
        budget, "plan_epochs", lambda *args, **kwargs: EpochPlan(2, 1e4, 0.0, 1e6 * 60 / 3)
    )  # a probe far too slow
    checkpoint = fold_checkpoint(tmp_path, "resnet10t", data, fold_of, 0, config)
    budgeted = fit_fold(data, fold_of, 0, config, checkpoint=checkpoint)
    assert len(budgeted.fit.history) == budgeted.plan.epochs == 4 and budgeted.plan.probe_seconds_per_epoch == 1e4
    assert checkpoints.load_plan(checkpoint)["epochs"] == 4  # a run killed later resumes with the corrected plan
    plain = fit_fold(data, fold_of, 0, dataclasses.replace(config, time_budget_minutes=None))
    expected = plain.fit.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in budgeted.fit.model.state_dict().items())

    without_warmup = fit_fold(
        data, fold_of, 0, dataclasses.replace(config, warmup_epochs=0)
    )  # the lr already hangs on the total
    assert len(without_warmup.fit.history) == without_warmup.plan.epochs == 2

    start = tmp_path / "start.safetensors"
    save_file(create_model(config, data.channels, len(data.classes) + len(data.target_names)).state_dict(), str(start))
    frozen_first = fit_fold(data, fold_of, 0, dataclasses.replace(config, pretrained=str(start), freeze_epochs=1))
    assert len(frozen_first.fit.history) == frozen_first.plan.epochs == 2  # a frozen epoch times the classifier alone


def test_budgeted_run_is_the_unbudgeted_run_of_its_planned_epochs(prepared, tmp_path):
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 3
    config = dataclasses.replace(BUDGETED, time_budget_minutes=1e-4)  # too little for one epoch: 1 planned
    budgeted = fit_fold(data, fold_of, 0, config)
    assert budgeted.plan.epochs == 1 < config.epochs and len(budgeted.fit.history) == 1
    assert budgeted.plan.budget_seconds == pytest.approx(1e-4 * 60 / 3)  # the backbone's budget shared by K=3 folds
    plain = fit_fold(
        data, fold_of, 0, dataclasses.replace(config, time_budget_minutes=None, epochs=budgeted.plan.epochs)
    )
    assert plain.plan is None
    expected = plain.fit.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in budgeted.fit.model.state_dict().items())
    assert np.array_equal(budgeted.oof_plain, plain.oof_plain)

    write_fold_outputs(budgeted, data, 0, "resnet10t", ACCURACY, tmp_path / "out")
    summary = read_json(tmp_path / "out" / "run.json")
    assert (summary["budget_seconds"], summary["planned_epochs"], summary["seconds_per_epoch_measured"]) == (
        budgeted.plan.budget_seconds,
        1,
        budgeted.plan.seconds_per_epoch,
    )


@pytest.mark.parametrize("augment_on", ["batch", "loader"])
def test_a_model_trained_on_random_crops_predicts_whole_images_and_crop_views(augment_on):
    rng = np.random.default_rng(0)
    images, labels = bars_dataset(160, rng)
    config = dataclasses.replace(CONFIG, augment_on=augment_on, augment=({"RandomCrop": {"height": 12, "width": 12}},))
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    seed_everything(0)
    model = create_model(config, in_chans=1, num_classes=2)
    result = fit(model, *halves(images, labels, 120), config, normalize, 2)
    assert result.best_val_score >= 0.8  # scored on the whole 16 px images
    views = tuple({"crop": 12, "shift": [dx, dy]} for dx in (-2, 2) for dy in (-2, 2))
    probs = predict(result.model, images[120:], normalize, config, views=views)[0]
    assert accuracy(probs, labels[120:]) >= 0.8


def test_a_fold_read_from_the_memory_mapped_array_trains_exactly_as_its_copy(tmp_path):
    """Large competitions train from train_images.npy batch by batch; the batches, so the weights, are the same."""
    images, labels = bars_dataset(200, np.random.default_rng(4))
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    index = np.flatnonzero(np.arange(200) % 5 != 0)
    rows = Rows(mapped, index)
    assert len(rows) == 160 and rows.shape == (160, 16, 16) and rows.nbytes == images[index].nbytes
    assert np.array_equal(rows[[7, 2, 150]], images[index[[7, 2, 150]]])
    assert np.array_equal(rows[3:9], images[index[3:9]]) and np.array_equal(np.asarray(rows), images[index])

    config = dataclasses.replace(CONFIG, epochs=1)

    def trained(split_images) -> dict:
        seed_everything(0)
        model = create_model(config, 1, 2)
        split = Split(split_images, labels[index])
        return fit(model, split, split, config, Normalizer(0.2, 0.3, None, torch.device("cpu"), False), 2).model

    from_copy, from_file = trained(images[index]).state_dict(), trained(rows).state_dict()
    assert all(torch.equal(from_copy[name], from_file[name]) for name in from_copy)
