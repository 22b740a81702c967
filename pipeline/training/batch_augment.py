"""The training augmentations applied to a whole batch at once, in torch, on the model's device.

`train.augment_on: batch` runs the `augment` list here instead of per image in the loader. The list
keeps albumentations' names, arguments and defaults (each entry is built by albumentations, which
checks it, and read back); this module draws each image's parameters for the whole batch and
applies them with a few tensor operations. On 2 CPU cores albumentations costs about 0.15 ms an
image, and the training step shares those cores with it; batched, the same work is a few
milliseconds a batch, run by torch's own threads. On a GPU the images never wait on a CPU.

Draws come from a generator seeded by (seed, epoch): a run resumed at an epoch repeats an
uninterrupted one. Images are float pixel values 0–255 (N, C, H, W) before normalisation.
"""

from __future__ import annotations

import math

import albumentations as A
import torch
import torch.nn.functional as F

from pipeline.config import SIZE_CHANGING
from pipeline.training.augment import batch_seed


class BatchAugment:
    def __init__(self, spec: tuple[dict, ...], strength: float, seed: int, device: torch.device):
        self.seed, self.device = seed, device
        self.generator = torch.Generator(device=device)
        self.steps = []
        for entry in spec:
            ((name, kwargs),) = entry.items()
            transform = getattr(A, name)(**(kwargs or {}))  # albumentations' defaults and argument checks
            p = (
                None if name in SIZE_CHANGING else min(1.0, transform.p * strength)
            )  # None: every image, or the batch would not stack
            self.steps.append((getattr(self, f"_{name}"), transform, p))
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(batch_seed(self.seed, epoch, 0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for apply, transform, p in self.steps:
            if p is None:
                x = apply(x, transform)
                continue
            chosen = self._uniform(len(x)) < p
            x = torch.where(chosen.view(-1, 1, 1, 1), apply(x, transform), x)
        return x

    def _uniform(self, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=self.device) * (high - low) + low

    def _HorizontalFlip(self, x: torch.Tensor, transform: A.HorizontalFlip) -> torch.Tensor:
        return x.flip(-1)

    def _RandomCrop(self, x: torch.Tensor, transform: A.RandomCrop) -> torch.Tensor:
        """A height × width window of each image, placed uniformly at random inside it (config.py checked it fits)."""
        n, height, width = len(x), x.shape[-2], x.shape[-1]
        top = (
            torch.floor(self._uniform(n) * (height - transform.height + 1)).long().clamp(max=height - transform.height)
        )
        left = torch.floor(self._uniform(n) * (width - transform.width + 1)).long().clamp(max=width - transform.width)
        rows = (top.view(-1, 1) + torch.arange(transform.height, device=x.device)).view(n, 1, -1, 1)
        cols = (left.view(-1, 1) + torch.arange(transform.width, device=x.device)).view(n, 1, 1, -1)
        images = torch.arange(n, device=x.device).view(-1, 1, 1, 1)
        channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return x[images, channels, rows, cols]

    def _Affine(self, x: torch.Tensor, transform: A.Affine) -> torch.Tensor:
        """Scale and rotate about the centre, then shift by a share of the side; zeros outside the image."""
        n, height, width = len(x), x.shape[-2], x.shape[-1]
        scale_x, scale_y = self._uniform(n, *transform.scale["x"]), self._uniform(n, *transform.scale["y"])
        angle = self._uniform(n, *transform.rotate) * (math.pi / 180)
        shift = transform.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        shift_x, shift_y = self._uniform(n, *shift["x"]) * 2, self._uniform(n, *shift["y"]) * 2  # in grid units (−1..1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # The forward map in pixels is rotation·scale; grid_sample wants the inverse, in grid units.
        forward = torch.stack(
            [torch.stack([cos * scale_x, -sin * scale_y], -1), torch.stack([sin * scale_x, cos * scale_y], -1)], -2
        )
        to_grid = torch.tensor([width / 2, height / 2], device=x.device)
        inverse = torch.linalg.inv(forward) * to_grid.view(1, 1, 2) / to_grid.view(1, 2, 1)
        offset = -(inverse @ torch.stack([shift_x, shift_y], -1).unsqueeze(-1))
        theta = torch.cat([inverse, offset], -1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _RandomBrightnessContrast(self, x: torch.Tensor, transform: A.RandomBrightnessContrast) -> torch.Tensor:
        contrast = 1 + self._uniform(len(x), *transform.contrast_limit).view(-1, 1, 1, 1)
        brightness = self._uniform(len(x), *transform.brightness_limit).view(-1, 1, 1, 1) * 255  # brightness_by_max
        return (x * contrast + brightness).clamp(0, 255)

    def _CoarseDropout(self, x: torch.Tensor, transform: A.CoarseDropout) -> torch.Tensor:
        """Up to num_holes_range[1] rectangles per image set to `fill`; sides in pixels, or shares of the side below
        1."""
        n, height, width = len(x), x.shape[-2], x.shape[-1]
        fewest, most = transform.num_holes_range
        holes = torch.floor(self._uniform(n, fewest, most + 1)).clamp(max=most)
        used = torch.arange(most, device=x.device).view(1, -1) < holes.view(-1, 1)

        def sides(bounds: tuple[float, float], side: int) -> torch.Tensor:
            low, high = (b * side if max(bounds) < 1 else b for b in bounds)
            return torch.floor(self._uniform(n * most, low, high + 1)).clamp(1, side).view(n, most)

        hole_height, hole_width = sides(transform.hole_height_range, height), sides(transform.hole_width_range, width)
        top = torch.floor(self._uniform(n * most).view(n, most) * (height - hole_height + 1))
        left = torch.floor(self._uniform(n * most).view(n, most) * (width - hole_width + 1))
        rows = torch.arange(height, device=x.device).view(1, 1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, 1, -1)
        inside = (
            (rows >= top[..., None, None])
            & (rows < (top + hole_height)[..., None, None])
            & (cols >= left[..., None, None])
            & (cols < (left + hole_width)[..., None, None])
            & used[..., None, None]
        )
        return torch.where(
            inside.any(1, keepdim=True), torch.as_tensor(float(transform.fill), dtype=x.dtype, device=x.device), x
        )
