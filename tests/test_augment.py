import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.training.augment import (
    DeviceBatches,
    EpochBatches,
    Normalizer,
    apply_view,
    build_augment,
    make_train_loader,
    plain_view,
)
from tests.conftest import train_config


def test_unknown_transform_and_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="'Flipp'"):
        build_augment(({"Flipp": {"p": 0.5}},), seed=0)
    with pytest.raises(ConfigError, match="Affine"):
        build_augment(({"Affine": {"no_such_argument": 1}},), seed=0)


def test_loader_yields_augmented_uint8_batches_reproducibly():
    images = np.random.default_rng(0).integers(0, 255, (43, 16, 16), dtype=np.uint8)
    labels = np.arange(43) % 4
    config = train_config(batch_size=8, workers=0, augment_on="loader", augment=({"HorizontalFlip": {"p": 1.0}},))
    batches = list(make_train_loader(images, labels, config, seed=3))
    x, y = batches[0]
    assert len(batches) == 5 and x.dtype == torch.uint8 and x.shape == (8, 16, 16)  # the partial sixth batch is dropped
    assert all(len(batch_labels) == 8 for _, batch_labels in batches)
    flipped = {np.ascontiguousarray(im[:, ::-1]).tobytes(): label for im, label in zip(images, labels)}
    assert all(flipped[image.numpy().tobytes()] == label for image, label in zip(x, y))
    again = list(make_train_loader(images, labels, config, seed=3))[0][0]
    assert torch.equal(x, again)


def test_loader_with_worker_processes_matches_shapes():
    images = np.zeros((20, 8, 8), np.uint8)
    config = train_config(batch_size=4, workers=1, augment_on="loader", augment=({"Affine": {"rotate": [-10, 10]}},))
    x, y = next(iter(make_train_loader(images, np.zeros(20, np.int64), config, seed=0)))
    assert x.shape == (4, 8, 8) and y.shape == (4,)


@pytest.mark.parametrize("augment_on, processes", [("loader", 2), ("batch", 0)])
def test_loader_processes_only_where_augmentations_run_per_image(augment_on, processes):
    config = train_config(batch_size=4, workers=2, augment_on=augment_on, augment=({"HorizontalFlip": {"p": 0.5}},))
    loader = make_train_loader(np.zeros((20, 8, 8), np.uint8), np.zeros(20, np.int64), config, seed=0)
    assert loader.num_workers == processes


def test_batches_held_on_the_device_are_the_loaders_batches_in_its_order():
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 255, (43, 6, 6), dtype=np.uint8), np.arange(43)
    targets = rng.normal(size=(43, 2)).astype(np.float32)
    config = train_config(batch_size=8, augment_on="batch")
    loader = make_train_loader(images, labels, config, seed=5, targets=targets)
    held = DeviceBatches(images, labels, targets, EpochBatches(43, 8, seed=5), torch.device("cpu"))
    assert len(held) == len(loader) == 5
    for epoch in (1, 2):
        loader.batch_sampler.set_epoch(epoch)
        held.batch_sampler.set_epoch(epoch)
        for ours, theirs in zip(held, loader, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_cpu_run_keeps_its_training_set_in_the_loader():
    config = train_config(batch_size=4, augment_on="batch")
    loader = make_train_loader(
        np.zeros((8, 4, 4), np.uint8), np.zeros(8, np.int64), config, 0, device=torch.device("cpu")
    )
    assert isinstance(loader, torch.utils.data.DataLoader)


def test_normalizer_makes_nchw_float_and_resizes():
    normalize = Normalizer(0.5, 0.25, input_size=32, device=torch.device("cpu"), channels_last=False)
    x = normalize(torch.full((2, 16, 16), 255, dtype=torch.uint8))
    assert x.shape == (2, 1, 32, 32) and torch.allclose(x, torch.full_like(x, 2.0))
    rgb = Normalizer(0.5, 0.25, None, torch.device("cpu"), True)(torch.zeros((2, 8, 8, 3), dtype=torch.uint8))
    assert rgb.shape == (2, 3, 8, 8) and rgb.is_contiguous(memory_format=torch.channels_last)


def test_tta_views():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    assert torch.equal(apply_view(x, {}), x)
    assert torch.equal(apply_view(x, {"hflip": True}), x.flip(3))
    shifted = apply_view(x, {"shift": [1, 0]})
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-4)
    zoomed = apply_view(x, {"scale": 1.2})
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x)


@pytest.mark.parametrize("dx, dy", [(2, -1), (-3, 3), (0, 2), (1, 0)])
def test_whole_pixel_shifts_move_the_image_and_repeat_its_edge_as_resampling_does(dx, dy):
    x = torch.randn(2, 3, 7, 9)
    rows = (torch.arange(7) - dy).clamp(0, 6)
    cols = (torch.arange(9) - dx).clamp(0, 8)
    moved = x[..., rows, :][..., cols]
    assert torch.equal(apply_view(x, {"shift": [dx, dy]}), moved)
    assert torch.equal(apply_view(x, {"shift": [dx, dy], "hflip": True}), moved.flip(3))
    # The same view as a sub-pixel shift a hair away goes through bilinear resampling, and lands on the same pixels.
    nearly = apply_view(x, {"shift": [dx + 1e-6, dy], "hflip": True})
    assert torch.allclose(nearly, moved.flip(3), atol=1e-4)


def test_crop_views_take_a_window_about_the_centre_moved_by_whole_pixels():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    assert torch.equal(apply_view(x, {"crop": 6}), x[..., 1:7, 1:7])
    assert torch.equal(apply_view(x, {"crop": 6, "shift": [1, -1], "hflip": True}), x[..., 0:6, 2:8].flip(3))
    with pytest.raises(ValueError, match=r"window leaves the 8×8 image; keep \|shift\| ≤ 1"):
        apply_view(x, {"crop": 6, "shift": [2, 0]})


def test_the_loader_crops_every_image_whatever_the_strength():
    images = np.random.default_rng(0).integers(0, 255, (16, 12, 12), dtype=np.uint8)
    config = train_config(
        batch_size=8,
        workers=0,
        augment_on="loader",
        augment_strength=0.5,
        augment=({"RandomCrop": {"height": 10, "width": 10}}, {"HorizontalFlip": {"p": 0.5}}),
    )
    x, _ = next(iter(make_train_loader(images, np.zeros(16, np.int64), config, seed=0)))
    assert x.shape == (8, 10, 10)


def test_a_model_trained_on_crops_is_scored_without_tta_on_the_centre_window():
    assert plain_view(({"HorizontalFlip": {"p": 0.5}},)) == {}
    assert plain_view(({"RandomCrop": {"height": 40, "width": 40}}, {"HorizontalFlip": {"p": 0.5}})) == {"crop": 40}
