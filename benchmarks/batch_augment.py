"""Milliseconds the batched augmentations (`train.augment_on: batch`) take per training batch, in all
and transform by transform, for each backbone: the part of a training step the in-memory speed
reference of benchmarks/throughput.py leaves out.

    python benchmarks/batch_augment.py                          # every backbone in params.yaml
    python benchmarks/batch_augment.py --backbone face_vgg --image-size 48 --calls 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throughput import wait_for_device  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.training.batch_augment import BatchAugment  # noqa: E402
from pipeline.training.models import pick_device  # noqa: E402

WARMUP_CALLS = 5


def milliseconds_per_batch(spec: tuple[dict, ...], batch: torch.Tensor, calls: int) -> float:
    augment = BatchAugment(spec, 1.0, 0, batch.device)
    for _ in range(WARMUP_CALLS):
        augment(batch)
    wait_for_device(batch.device)  # the warm-up calls are not timed, on a GPU either
    started = time.perf_counter()
    for _ in range(calls):
        augment(batch)
    wait_for_device(batch.device)
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--backbone", nargs="*", help="backbones from params.yaml (default: all)")
    parser.add_argument("--image-size", type=int, default=48, help="side of the prepared images")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    config = load_config(args.params)
    device = pick_device()
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.image_size} px, {args.calls} calls after "
        f"{WARMUP_CALLS}"
    )
    for name in args.backbone or list(config.backbones):
        train = config.backbone(name)
        batch = torch.randint(
            0, 256, (train.batch_size, args.channels, args.image_size, args.image_size), device=device
        ).float()
        parts = [
            f"{next(iter(entry))} {milliseconds_per_batch((entry,), batch, args.calls):.2f}" for entry in train.augment
        ]
        print(
            f"{name} (batch {train.batch_size}): all {milliseconds_per_batch(train.augment, batch, args.calls):.2f} "
            "ms; " + ", ".join(parts),
            flush=True,
        )


if __name__ == "__main__":
    main()
