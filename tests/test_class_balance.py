"""train.class_balance: inverse-frequency loss weights, class-balanced batches and logit adjustment."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from pipeline.config import config_from_dict
from pipeline.data import load_prepared
from pipeline.errors import ConfigError
from pipeline.training.augment import EpochBatches
from pipeline.training.class_balance import (
    balanced_sampling,
    class_counts,
    class_loss,
    inverse_frequency_weights,
    log_priors,
)
from pipeline.training.fold_run import fit_fold
from tests.conftest import tiny_params, train_config

CPU = torch.device("cpu")
LABELS = np.array([0] * 90 + [1] * 10)


def test_weights_are_scikit_learns_balanced_and_an_absent_class_weighs_nothing():
    counts = class_counts(np.array([0] * 90 + [1] * 10), 3)
    assert counts.tolist() == [90, 10, 0]
    assert inverse_frequency_weights(counts) == pytest.approx([100 / (2 * 90), 100 / (2 * 10), 0.0])
    assert np.isfinite(log_priors(counts)).all()


def test_balanced_batches_draw_every_class_about_equally_and_repeat_exactly():
    sampler = EpochBatches(len(LABELS), 10, seed=3, probabilities=balanced_sampling(LABELS, 2))
    draws = np.concatenate([(sampler.set_epoch(e), sampler.order())[1] for e in range(1, 51)])
    share_of_rare = (LABELS[draws] == 1).mean()
    assert 0.45 < share_of_rare < 0.55  # 10% of the images, half of the draws
    sampler.set_epoch(7)
    assert np.array_equal(sampler.order(), sampler.order())


def test_without_class_balance_the_loss_is_plain_cross_entropy_hard_or_soft():
    logits = torch.randn(8, 3)
    hard = torch.randint(0, 3, (8,))
    soft = torch.softmax(torch.randn(8, 3), dim=1)
    config = train_config(label_smoothing=0.1, class_balance="none")
    loss = class_loss(config, np.array([5, 2, 1]), CPU)
    torch.testing.assert_close(loss(logits, hard), F.cross_entropy(logits, hard, label_smoothing=0.1))
    torch.testing.assert_close(loss(logits, soft), SoftTargetCrossEntropy()(logits, soft))


def test_weights_and_logit_adjustment_change_the_loss_as_they_say():
    counts = np.array([90, 10])
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    target = torch.tensor([0, 1])
    weighted = class_loss(train_config(label_smoothing=0.0, class_balance="weights"), counts, CPU)
    weights = torch.tensor(inverse_frequency_weights(counts), dtype=torch.float32)
    torch.testing.assert_close(weighted(logits, target), F.cross_entropy(logits, target, weight=weights))
    one_hot = F.one_hot(target, 2).float()
    per_image = -(one_hot * F.log_softmax(logits, 1) * weights).sum(1)
    torch.testing.assert_close(weighted(logits, one_hot), per_image.mean())  # mixup's soft targets
    adjusted = class_loss(train_config(label_smoothing=0.0, class_balance="logit_adjustment"), counts, CPU)
    shifted = logits + torch.log(torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(adjusted(logits, target), F.cross_entropy(shifted, target))


def test_an_unknown_class_balance_is_refused_with_the_choices():
    params = tiny_params()
    params["train"] = {**params["train"], "class_balance": "oversample"}
    with pytest.raises(ConfigError, match=r"train.class_balance='oversample'.*'logit_adjustment'"):
        config_from_dict(params)


def test_a_run_on_balanced_batches_trains_and_repeats_exactly(prepared):
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 2
    config = dataclasses.replace(train_config(model="resnet10t", epochs=1, batch_size=16), class_balance="sampler")
    first, second = (fit_fold(data, fold_of, 0, config) for _ in range(2))
    assert np.array_equal(first.oof_plain, second.oof_plain)
