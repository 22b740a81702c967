"""Distillation and pseudo-labels: a student learns from its fold's teachers only, so its OOF stays honest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError, config_from_dict
from pipeline.data import Prepared
from pipeline.training.distill_loss import NO_LABEL, distilled_loss
from pipeline.training.distillation import Teaching, read_teaching, taught_split, teachers_file
from pipeline.training.fold_run import fit_fold, fold_checkpoint
from tests.conftest import tiny_params, train_config

SIDE, CLASSES, PER_FOLD = 32, 3, 60
LEVELS = (40, 128, 215)  # the rule: a face's class is its brightness


def marked_competition() -> tuple[Prepared, np.ndarray]:
    """Three folds of faces whose class is their brightness, except in fold 0, where every face is marked (a
    checkerboard corner) and labelled one class up. The test images are the train images again. A model that
    never saw fold 0's labels predicts by brightness there and scores about 0 on fold 0; only one that was told
    fold 0's labels can know that the mark shifts the class."""
    rng = np.random.default_rng(0)
    rule = np.tile(np.arange(CLASSES), PER_FOLD)
    fold_of = np.repeat(np.arange(3), PER_FOLD)
    rule = rule[: len(fold_of)]
    images = np.clip(np.array(LEVELS)[rule][:, None, None] + rng.normal(0, 12, (len(rule), SIDE, SIDE)), 0, 255)
    images = images.astype(np.uint8)
    checkerboard = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    images[fold_of == 0, :8, :8] = checkerboard
    labels = np.where(fold_of == 0, (rule + 1) % CLASSES, rule)
    ids = np.array([f"{i}" for i in range(len(rule))])
    data = Prepared(
        train_images=images,
        train_ids=ids,
        train_labels=labels,
        train_files=ids,
        test_images=images.copy(),
        test_ids=np.array([f"t{i}" for i in range(len(rule))]),
        classes=["dark", "mid", "bright"],
        submission_labels=["dark", "mid", "bright"],
        submission_form="label",
        pixel_mean=float(images.mean()) / 255,
        pixel_std=float(images.std()) / 255,
        fingerprint="marked",
    )
    return data, fold_of


def teachers_saying(data: Prepared, fold_of: np.ndarray, path) -> None:
    """What honest fold models would write (teach@): fold k's model knows the labels of the folds it trained on
    and, on fold k's faces, says the brightness rule."""
    rule = (data.train_labels - (fold_of == 0)) % CLASSES  # fold 0's labels shifted back
    confident = lambda classes: np.eye(CLASSES)[classes] * 0.9 + 0.1 / CLASSES  # noqa: E731
    train = np.full((3, len(fold_of), CLASSES), np.nan, np.float32)
    test = np.empty((3, len(fold_of), CLASSES), np.float32)
    for fold in range(3):
        seen = fold_of != fold
        train[fold, seen] = confident(data.train_labels[seen])
        test[fold] = confident(np.where(seen, data.train_labels, rule))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train=train, test=test, folds=np.arange(3), fingerprint=data.fingerprint)


def fold_zero_accuracy(data: Prepared, fold_of: np.ndarray, teaching: Teaching, tmp_path) -> float:
    config = train_config(
        model="resnet10t", epochs=8, batch_size=30, lr=0.003, warmup_epochs=0, augment=(), label_smoothing=0.0
    )
    run = fit_fold(data, fold_of, 0, config, teaching=teaching)
    return float(np.mean(run.oof_plain.argmax(1) == data.train_labels[run.valid_index]))


def test_a_student_learns_from_its_own_folds_teachers_only_so_its_oof_stays_honest(tmp_path):
    """The real fold run on what teach@ would have written: fold 0's student, taught (and its test images
    pseudo-labelled) by fold 0's teacher alone, knows nothing of fold 0's labels; the same student taught on the
    test images by every fold's teacher, as a careless pipeline would (test_predictions/<teacher>.csv averages
    them), learns them through the test copies of fold 0's faces, and its OOF rises far above what it can score."""
    data, fold_of = marked_competition()
    teachers_saying(data, fold_of, teachers_file(tmp_path, "teacher"))
    settings = config_from_dict(
        tiny_params(
            backbones={"teacher": {}},
            distill={**tiny_params()["distill"], "teachers": ["teacher"], "students": {"student": {}}},
        )
    ).distill
    honest = read_teaching(tmp_path, settings, 0, data)
    with np.load(teachers_file(tmp_path, "teacher")) as saved:
        leaky = dataclasses.replace(honest, test_probs=saved["test"].mean(axis=0))
    honest_accuracy = fold_zero_accuracy(data, fold_of, honest, tmp_path)
    leaky_accuracy = fold_zero_accuracy(data, fold_of, leaky, tmp_path)
    assert honest_accuracy < 0.2, honest_accuracy
    assert leaky_accuracy > 0.6, leaky_accuracy


def test_the_loss_weighs_labels_and_softened_teachers_and_skips_the_label_term_of_test_images():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, CLASSES), torch.softmax(torch.randn(6, CLASSES), dim=1)
    labels = torch.tensor([0, 1, 2, NO_LABEL, NO_LABEL, 1])
    labelled = labels != NO_LABEL
    cross_entropy = torch.nn.CrossEntropyLoss()
    assert distilled_loss(logits, labels, teacher, cross_entropy, 2.0, 1.0) == pytest.approx(
        float(F.cross_entropy(logits[labelled], labels[labelled]))
    )
    temperature = 3.0
    softened = torch.softmax(teacher.log() / temperature, dim=1)
    by_hand = temperature**2 * F.kl_div(F.log_softmax(logits / temperature, 1), softened, reduction="batchmean")
    assert distilled_loss(logits, labels, teacher, cross_entropy, temperature, 0.0) == pytest.approx(float(by_hand))
    mixed = distilled_loss(logits, labels, teacher, cross_entropy, temperature, 0.25)
    expected = 0.25 * F.cross_entropy(logits[labelled], labels[labelled]) + 0.75 * by_hand
    assert float(mixed) == pytest.approx(float(expected), rel=1e-5)
    only_test_images = torch.full((6,), NO_LABEL)  # a batch of test images alone: no NaN from an empty mean
    assert torch.isfinite(distilled_loss(logits, only_test_images, teacher, cross_entropy, 2.0, 0.5))


def test_a_students_split_adds_the_test_images_unlabelled_and_its_checkpoint_follows_its_teachers(tmp_path):
    data, fold_of = marked_competition()
    teachers_saying(data, fold_of, teachers_file(tmp_path, "teacher"))
    params = tiny_params(backbones={"teacher": {}})
    params["distill"] = {**params["distill"], "teachers": ["teacher"], "students": {"student": {"model": "resnet10t"}}}
    settings = config_from_dict(params).distill
    teaching = read_teaching(tmp_path, settings, 1, data)
    train_index = np.flatnonzero(fold_of != 1)
    split = taught_split(data, train_index, teaching)
    assert len(split.images) == len(train_index) + len(data.test_images)
    assert (split.labels[len(train_index) :] == NO_LABEL).all()
    assert np.array_equal(split.labels[: len(train_index)], data.train_labels[train_index])
    np.testing.assert_allclose(split.targets[len(train_index) :], teaching.test_probs)
    without = taught_split(data, train_index, dataclasses.replace(teaching, test_probs=None))
    assert len(without.images) == len(train_index) and without.targets.shape == (len(train_index), CLASSES)
    config = train_config(model="resnet10t")
    keys = {
        fold_checkpoint(tmp_path, "student", data, fold_of, 1, config, teaching=t).path
        for t in (teaching, dataclasses.replace(teaching, temperature=4.0), None)
    }
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"students": {"s": {}}}, "needs distill.teachers"),
        ({"teachers": ["nobody"]}, "which `backbones` does not have"),
        ({"teachers": ["resnet10t"], "students": {"resnet18": {}}}, "named both"),
        ({"teachers": ["resnet10t"], "students": {"s": {"mixup_alpha": 0.2}}}, "mixes images"),
        ({"teachers": ["resnet10t"], "students": {"s": {"class_balance": "sampler"}}}, "class_balance sampler"),
        ({"temperature": 0}, "temperature"),
        ({"label_weight": 1.5}, "label_weight"),
        ({"students": {"bad name": {}}, "teachers": ["resnet10t"]}, "run name"),
        ({"teachers": ["resnet10t"], "init_from": "resnet18"}, "not one of distill.teachers"),
        ({"teachers": ["resnet10t"], "init_from": "resnet10t", "students": {"s": {"model": "resnet18"}}}, "own model"),
        (
            {
                "teachers": ["resnet10t"],
                "init_from": "resnet10t",
                "students": {"s": {"model": "resnet10t", "pretrained": "a.pth"}},
            },
            "keep one",
        ),
    ],
)
def test_distill_settings_that_cannot_work_are_refused_by_name(distill, message):
    params = tiny_params()
    params["distill"] = {**params["distill"], **distill}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(params)
