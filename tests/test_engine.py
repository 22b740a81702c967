import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import train_config
from pipeline.augment import EpochBatches, Normalizer
from pipeline.engine import NonFiniteLoss, fit, predict_proba, seed_everything
from pipeline.metrics import log_loss_and_accuracy
from pipeline.models import create_model


def bars_dataset(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright horizontal bar; class 1: a vertical one. Learnable in a few steps."""
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
    for image, label, where in zip(images, labels, rng.integers(3, 13, n)):
        if label == 0:
            image[where - 1:where + 2, :] = 255
        else:
            image[:, where - 1:where + 2] = 255
    return images, labels


CONFIG = train_config(model="resnet10t", epochs=3, batch_size=16, lr=0.003, warmup_epochs=0, workers=0, augment=())


def test_fit_learns_keeps_best_epoch_and_reports_every_epoch():
    rng = np.random.default_rng(0)
    images, labels = bars_dataset(160, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    seen = []
    seed_everything(0)
    model = create_model(CONFIG, in_chans=1, num_classes=2)
    result = fit(model, images[:120], labels[:120], images[120:], labels[120:], CONFIG, normalize, 2, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert result.best_val_acc == max(r.val_acc for r in seen) >= 0.8  # chance is 0.5
    probs = predict_proba(result.model, images[120:], normalize, CONFIG, views=({}, {"hflip": True}))
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert log_loss_and_accuracy(probs, labels[120:])[1] >= 0.8


def test_eval_every_scores_only_every_nth_and_the_last_epoch():
    rng = np.random.default_rng(3)
    images, labels = bars_dataset(64, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = dataclasses.replace(CONFIG, epochs=5, eval_every=2)
    seen = []
    result = fit(create_model(config, 1, 2), images, labels, images, labels, config, normalize, 2, on_epoch=seen.append)
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
    fit(create_model(CONFIG, 1, 2), images, labels, images, labels, CONFIG, normalize, 2)
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
        fit(create_model(CONFIG, 1, 2), images, labels, images, labels, CONFIG, normalize, 2, on_epoch=stop_after_first)


def test_diverging_training_raises_a_clear_error():
    rng = np.random.default_rng(2)
    images, labels = bars_dataset(64, rng)
    normalize = Normalizer(0.2, 0.3, None, torch.device("cpu"), False)
    config = train_config(model="resnet10t", epochs=2, batch_size=16, lr=1e6, warmup_epochs=0, workers=0, augment=(), label_smoothing=0.0)
    with pytest.raises(NonFiniteLoss, match="lower lr"):
        fit(create_model(config, 1, 2), images, labels, images, labels, config, normalize, 2)
