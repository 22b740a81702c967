"""`augment_on: batch`: albumentations' transforms, drawn per image but applied to the whole batch in torch."""

import numpy as np
import pytest
import torch

from pipeline.config import BATCH_AUGMENTS, config_from_dict
from pipeline.errors import ConfigError
from pipeline.training.batch_augment import BatchAugment
from tests.conftest import project_params, train_config

CPU = torch.device("cpu")


def images(n: int = 32, side: int = 24) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(1, 255, (n, 1, side, side))).float()


def augment(*spec: dict, strength: float = 1.0, seed: int = 0) -> BatchAugment:
    return BatchAugment(spec, strength, seed, CPU)


def test_a_flip_and_an_affine_that_only_shifts_move_pixels_exactly():
    x = images()
    assert torch.equal(augment({"HorizontalFlip": {"p": 1.0}})(x), x.flip(-1))
    assert torch.allclose(
        augment({"Affine": {"p": 1.0}})(x), x, atol=1e-3
    )  # albumentations' defaults: scale 1, no shift, no rotation
    shifted = augment({"Affine": {"translate_percent": [0.25, 0.25], "p": 1.0}})(x)  # 6 of 24 pixels right and down
    expected = torch.zeros_like(x)
    expected[..., 6:, 6:] = x[..., :-6, :-6]
    assert torch.allclose(shifted, expected, atol=1e-3)


def test_an_affine_rotation_turns_the_image_about_its_centre():
    x = torch.zeros(1, 1, 25, 25)
    x[..., 12, 18] = 255  # a dot 6 pixels right of the centre
    turned = augment({"Affine": {"rotate": [90, 90], "p": 1.0}})(x)
    row, col = divmod(int(turned.flatten().argmax()), 25)
    assert (abs(row - 12), col) == (6, 12)  # now 6 pixels above or below it, on the centre column


def test_brightness_contrast_and_dropout_follow_albumentations_arguments():
    x = images()
    brighter = augment(
        {"RandomBrightnessContrast": {"brightness_limit": [0.1, 0.1], "contrast_limit": [0.0, 0.0], "p": 1.0}}
    )(x)
    assert torch.allclose(brighter, (x + 25.5).clamp(0, 255))
    holes = augment(
        {
            "CoarseDropout": {
                "num_holes_range": [1, 1],
                "hole_height_range": [5, 5],
                "hole_width_range": [7, 7],
                "p": 1.0,
            }
        }
    )(x)
    assert ((holes == 0).flatten(1).sum(1) == 35).all()  # one 5×7 hole per image (the images hold no zeros)


def test_p_and_strength_set_the_share_of_images_changed():
    x = images(4000, 8)
    changed = lambda a: (a(x) != x).flatten(1).any(1).float().mean().item()  # noqa: E731
    assert changed(augment({"HorizontalFlip": {"p": 0.3}})) == pytest.approx(0.3, abs=0.03)
    assert changed(augment({"HorizontalFlip": {"p": 0.3}}, strength=2.0)) == pytest.approx(0.6, abs=0.03)


def test_draws_depend_on_seed_and_epoch_only():
    x = images()
    spec = ({"Affine": {"rotate": [-30, 30], "p": 0.5}}, {"CoarseDropout": {"p": 0.5}})
    first, again = augment(*spec), augment(*spec)
    epoch_one = first(x)
    assert torch.equal(epoch_one, again(x))
    first.set_epoch(2)
    epoch_two = first(x)
    assert not torch.equal(epoch_one, epoch_two)
    again.set_epoch(2)
    assert torch.equal(epoch_two, again(x))  # a run resumed at epoch 2 draws what an uninterrupted one drew
    assert not torch.equal(augment(*spec, seed=1)(x), epoch_one)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"ElasticTransform": {}}, r"ElasticTransform has no batched version.*augment_on: loader"),
        (
            {"Affine": {"shear": [-5, 5]}},
            r"takes only \['scale', 'translate_percent', 'rotate', 'p'\] of Affine, not \['shear'\]",
        ),
    ],
)
def test_a_transform_the_batch_cannot_run_is_refused_at_load_time(entry, match):
    with pytest.raises(ConfigError, match=match):
        train_config(augment_on="batch", augment=(entry,)).validate("train")
    train_config(augment_on="loader", augment=(entry,)).validate("train")  # per image, albumentations runs it


def test_a_random_crop_takes_a_window_of_every_image_placed_anywhere_inside_it():
    x = images(400, 12)
    crop = augment(
        {"RandomCrop": {"height": 8, "width": 6}}, strength=0.5
    )  # the batch path itself takes any window  # strength does not make some images skip it
    windows = crop(x)
    assert windows.shape == (400, 1, 8, 6)
    places = set()
    for image, window in zip(x, windows):
        found = [
            (top, left)
            for top in range(5)
            for left in range(7)
            if torch.equal(image[:, top : top + 8, left : left + 6], window)
        ]
        assert found, "a crop is an exact window of its image"
        places.add(found[0])
    assert len(places) == 5 * 7  # every placement drawn


def test_a_crop_is_refused_at_load_time_unless_it_applies_to_every_image_and_fits(tmp_path):
    crop_on = lambda **p: ({"RandomCrop": {"height": 40, "width": 40, **p}},)  # noqa: E731
    for augment_on in ("batch", "loader"):
        with pytest.raises(ConfigError, match=r"RandomCrop changes the image size.*remove its p \(it is 0.5\)"):
            train_config(augment_on=augment_on, augment=crop_on(p=0.5)).validate("train")
    with pytest.raises(ConfigError, match=r"must be square"):
        train_config(augment=({"RandomCrop": {"height": 40, "width": 36}},)).validate("train")
    params = project_params()
    params["train"]["augment"] = [{"RandomCrop": {"height": 56, "width": 56}}]
    with pytest.raises(ConfigError, match=r"backbones.resnet10t: augment RandomCrop .* larger than data.image_size 48"):
        config_from_dict(params)
    params["train"]["augment"] = [{"RandomCrop": {"height": 40, "width": 40}}]
    params["tta"]["views"] = [{"crop": 40, "scale": 1.1}]
    with pytest.raises(ConfigError, match=r"scale must be left out with crop"):
        config_from_dict(params)
    params["tta"]["views"] = [{}, {"crop": 40, "shift": [4, -4], "hflip": True}]
    assert config_from_dict(params).tta.of("resnet10t")[1]["crop"] == 40


def test_the_transforms_params_yaml_may_batch_are_exactly_those_batch_augment_applies():
    """config.py refuses, at load time, a transform or argument BatchAugment cannot batch: its list must be
    BatchAugment's."""
    applied = {name[1:] for name in vars(BatchAugment) if name.startswith("_") and name[1:2].isupper()}
    assert applied == set(BATCH_AUGMENTS)
