"""The training data path and test-time views.

Training batches are uint8 arrays, decoded once. Under `augment_on: batch` (the default) they are
sliced in the training process and augmented there, batched in torch (pipeline/training/batch_augment.py),
and on a GPU the whole training set is held there as uint8 (DeviceBatches);
under `augment_on: loader`, per image with albumentations in `workers` loader processes. Conversion
to float, normalisation and resizing happen once per batch, on the model's device. Batch order and
augmentations are a function of (seed, epoch, batch number) alone, so a resumed run repeats an
uninterrupted one. TTA views are batched tensor transforms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import SIZE_CHANGING, TrainConfig, random_crop_side, resamples
from pipeline.data import Prepared
from pipeline.errors import ConfigError
from pipeline.training.pretrained import input_statistics


def build_augment(spec: tuple[dict, ...], seed: int, strength: float = 1.0) -> A.Compose:
    """`[{Name: {kwargs}}, ...]` from params → an albumentations pipeline.

    `strength` multiplies each transform's probability, so one number tunes how much augmentation.
    """
    transforms = []
    for entry in spec:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"augment entry {entry!r} must be a one-key mapping like {{HorizontalFlip: {{p: 0.5}}}}")
        ((name, kwargs),) = entry.items()
        factory = getattr(A, name, None)
        if not (isinstance(factory, type) and issubclass(factory, A.BasicTransform)):
            raise ConfigError(
                f"augment: {name!r} is not an albumentations transform (see albumentations' list, e.g. HorizontalFlip, "
                "Affine)"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # albumentations only warns on unknown arguments
                transform = factory(**(kwargs or {}))
            if name not in SIZE_CHANGING:  # a crop on some images only would leave a batch of two sizes
                transform.p = min(1.0, transform.p * strength)
            transforms.append(transform)
        except (TypeError, ValueError, UserWarning) as error:
            raise ConfigError(f"augment: bad arguments for {name}: {error}") from error
    return A.Compose(transforms, seed=seed)


class AugmentedImages(torch.utils.data.Dataset):
    """uint8 images and int labels (and, when given, float regression targets: batches are then
    (images, labels, targets)); a batch is fetched and augmented in one call.

    The loader's batch sampler (:class:`EpochBatches`) hands `__getitems__` a `(batch_seed, indices)`
    pair: the augmentations are reseeded per batch, so they depend on the batch alone, never on
    which loader process draws it or what that process drew before.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: A.Compose, targets: np.ndarray | None = None):
        self.images, self.labels, self.transform, self.targets = images, labels, transform, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, batch: tuple[int, list[int]]) -> tuple[torch.Tensor, ...]:
        batch_seed, indices = batch
        images = self.images[indices]
        if self.transform.transforms:
            self.transform.set_random_seed(batch_seed)
            images = np.stack([self.transform(image=image)["image"] for image in images])
        if self.targets is None:
            return torch.from_numpy(images), torch.from_numpy(self.labels[indices])
        return torch.from_numpy(images), torch.from_numpy(self.labels[indices]), torch.from_numpy(self.targets[indices])


def batch_seed(seed: int, epoch: int, number: int) -> int:
    """The augmentation seed of batch `number` of `epoch`: a function of the three numbers only."""
    return int(np.random.SeedSequence((seed % 2**64, epoch, number)).generate_state(1)[0])


class EpochBatches(torch.utils.data.Sampler):
    """Full batches of a per-epoch permutation, each yielded as `(batch_seed, indices)`.

    The order and the augmentation seeds depend only on (seed, epoch, batch number): set the epoch
    with :meth:`set_epoch` before iterating, and a run resumed at epoch e draws what an
    uninterrupted one would have. The last partial batch is dropped (mixup pairs images within a
    batch and needs an even, full one).
    """

    def __init__(self, size: int, batch_size: int, seed: int, probabilities: np.ndarray | None = None):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.probabilities = probabilities  # None: each image once an epoch; else drawn with replacement
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def order(self) -> np.ndarray:
        """This epoch's permutation of the images (or draw, under `probabilities`); batch `b` is its slice
        `b·batch_size` onwards."""
        rng = np.random.default_rng((self.seed % 2**64, self.epoch))
        if self.probabilities is None:
            return rng.permutation(self.size)
        return rng.choice(self.size, size=self.size, p=self.probabilities)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.epoch  # read now: a loader's workers prefetch from this iterator later
        order = self.order()
        return (
            (
                batch_seed(self.seed, epoch, number),
                order[number * self.batch_size : (number + 1) * self.batch_size].tolist(),
            )
            for number in range(len(self))
        )


class DeviceBatches:
    """The training set held on the model's device as uint8, each batch indexed there: on a GPU the steps
    then never wait on the CPU to slice, pin and copy a batch. The same batches, in the same order, as the
    loader under augment_on: batch (the augmentations run in the training step either way)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        targets: np.ndarray | None,
        sampler: EpochBatches,
        device: torch.device,
    ):
        self.arrays = [
            torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (images, labels, targets) if a is not None
        ]
        self.batch_sampler, self.device = sampler, device

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        size = self.batch_sampler.batch_size
        order = torch.from_numpy(self.batch_sampler.order()).to(self.device)
        for number in range(len(self)):
            rows = order[number * size : (number + 1) * size]
            yield tuple(array[rows] for array in self.arrays)


def _keep_batch(batch: Any) -> Any:
    return batch


def _init_worker(worker_id: int) -> None:
    cv2.setNumThreads(1)  # one loader process, one core: OpenCV's own threads would fight the model's


# The share of the device's free memory a training set may take to be held there whole.
DEVICE_RESIDENT_SHARE = 0.25


def make_train_loader(
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    seed: int,
    targets: np.ndarray | None = None,
    device: torch.device | None = None,
    probabilities: np.ndarray | None = None,
) -> torch.utils.data.DataLoader | DeviceBatches:
    """Augmented uint8 batches, (images, labels) or with `targets` (N×T float) (images, labels, targets);
    call `loader.batch_sampler.set_epoch(epoch)` before each epoch.

    Batches depend only on (seed, epoch, batch number), whatever `config.workers` is; with `probabilities`
    (per image) they are drawn with replacement, as class_balance: sampler does. On a CUDA `device`,
    under augment_on: batch, a training set that fits in a quarter of its free memory is held there
    (:class:`DeviceBatches`).
    """
    sampler = EpochBatches(len(images), config.batch_size, seed, probabilities)
    held = [a for a in (images, labels, targets) if a is not None]
    if config.augment_on == "batch" and fits_on(device, sum(a.nbytes for a in held)):
        return DeviceBatches(images, labels, targets, sampler, device)
    per_image = config.augment if config.augment_on == "loader" else ()  # batched ones run in the training step
    dataset = AugmentedImages(images, labels, build_augment(per_image, seed, config.augment_strength), targets)
    # Under augment_on: batch the loader only slices uint8 arrays; a loader process would add
    # hand-offs and wake-ups on cores the training step uses, for no work of its own.
    workers = config.workers if per_image else 0
    # One OpenCV thread, whoever augments. Without loader processes the augmentations run between the
    # model's steps, where a pool of OpenCV threads only fights torch's (face_vgg on 2 cores, three runs:
    # 0.80–0.94 of the in-memory speed with OpenCV's pool, 0.93–0.96 without). With loader processes,
    # OpenCV's pool does not survive fork: a loader process that resizes a pool its parent had running
    # hangs in cv2.setNumThreads.
    cv2.setNumThreads(1)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_keep_batch,
        # The loader draws its workers' base seed once per iterator; a generator of its own keeps that
        # draw off the global torch RNG, which dropout and drop-path use.
        generator=torch.Generator().manual_seed(seed % 2**63),
        worker_init_fn=_init_worker if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )


def fits_on(device: torch.device | None, nbytes: int) -> bool:
    """Whether `nbytes` of training data may live on `device`: a CUDA device with room to spare."""
    if device is None or device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_RESIDENT_SHARE * free


def standardize(pixels: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]) -> torch.Tensor:
    """Float pixel values 0–255 (NCHW) → the model's input, by a mean and std (fractions of 255), one value or one
    per channel: the one formula training, scoring and the exported graphs share."""
    if isinstance(mean, Sequence) and len(mean) == 1 and isinstance(std, Sequence) and len(std) == 1:
        mean, std = mean[0], std[0]
    if isinstance(mean, Sequence) or isinstance(std, Sequence):
        shape = (1, -1, 1, 1)
        mean = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(shape)
        std = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(shape)
    return (pixels - mean * 255) / (std * 255)


def resize(x: torch.Tensor, side: int, interpolation: str) -> torch.Tensor:
    """NCHW images to side×side, as training, scoring and the exported graphs all resize them."""
    return F.interpolate(x, size=(side, side), mode=interpolation, align_corners=False)


class Normalizer:
    """uint8 batch (N,H,W[,C]) → normalised float NCHW at the model's input size, on `device`; `augment`,
    when given, sees the float pixel values 0–255 first (pipeline/training/batch_augment.py)."""

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        input_size: int | None,
        device: torch.device,
        channels_last: bool,
        interpolation: str = "bilinear",
    ):
        self.mean, self.std, self.interpolation = mean, std, interpolation
        self.input_size, self.device, self.channels_last = input_size, device, channels_last

    @classmethod
    def of_model(cls, config: TrainConfig, data: Prepared, device: torch.device) -> Normalizer:
        """The normalisation a model of `config` trains and is scored with (train.normalize)."""
        statistics = input_statistics(config, data.pixel_mean, data.pixel_std, data.channels)
        return cls(
            statistics.mean, statistics.std, config.input_size, device, config.channels_last, statistics.interpolation
        )

    def __call__(
        self, batch: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True)
        x = (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).float()
        if augment is not None:
            x = augment(x)
        x = standardize(x, self.mean, self.std)
        if self.input_size and x.shape[-1] != self.input_size:
            x = resize(x, self.input_size, self.interpolation)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def apply_view(x: torch.Tensor, view: dict) -> torch.Tensor:
    """One test-time view of a normalised NCHW batch: a flip, a shift in pixels and/or a zoom, or a
    `crop`-pixel window about the centre moved by `shift` (the views of a model trained on RandomCrop)."""
    view = view or {}
    if "crop" in view:
        return _crop_view(x, view)
    dx, dy = view.get("shift", (0, 0))
    scale = float(view.get("scale", 1.0))
    flip = bool(view.get("hflip", False))
    if not resamples(view):
        x = _shift_whole_pixels(x, int(dx), int(dy))
        return torch.flip(x, dims=[3]) if flip else x
    height, width = x.shape[-2:]
    theta = torch.tensor(
        [[(-1.0 if flip else 1.0) / scale, 0.0, -2.0 * dx / width], [0.0, 1.0 / scale, -2.0 * dy / height]],
        device=x.device,
    )
    # x.shape, not len(x) or a list: an exported graph then keeps its batch size dynamic.
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3).to(x.dtype), x.shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shift_whole_pixels(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`x` moved right by dx and down by dy, the edge pixels repeated into the gap: what the bilinear
    resampling below gives at whole pixels, by padding and slicing, which ONNX writes at any opset."""
    if dx == 0 and dy == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


def plain_view(augment: tuple[dict, ...]) -> dict:
    """The one view a model is scored on without test-time augmentation: the whole image, or, for a model
    trained on RandomCrop windows, the centre window (on whole faces such a model scored 0.48 against 0.62)."""
    side = random_crop_side(augment)
    return {"crop": side} if side else {}


def _crop_view(x: torch.Tensor, view: dict) -> torch.Tensor:
    size = int(view["crop"])
    dx, dy = (int(d) for d in view.get("shift", (0, 0)))
    height, width = x.shape[-2:]
    top, left = (height - size) // 2 + dy, (width - size) // 2 + dx
    # An exported graph reads these sizes as tensors; the bounds were checked when the views were scored in PyTorch.
    if not torch.jit.is_tracing() and not (0 <= top <= height - size and 0 <= left <= width - size):
        raise ValueError(
            f"tta view {view}: the {size}-pixel window leaves the {height}×{width} image; keep |shift| ≤ "
            f"{(min(height, width) - size) // 2}"
        )
    x = x[..., top : top + size, left : left + size]
    return torch.flip(x, dims=[3]) if view.get("hflip", False) else x
