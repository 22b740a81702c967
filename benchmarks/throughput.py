"""Training images/s: the pipeline's own step fed by its own data path, against the same model and
optimizer on random tensors already in memory (what the hardware can do with no data path at all).

    python benchmarks/throughput.py                       # every backbone in params.yaml
    python benchmarks/throughput.py --backbone resnet18 --precision fp32 bf16 --channels-last no yes

Images come from a prepared dataset (--data, e.g. data/prepared after `dvc repro prepare`) or, when
there is none, from a freshly drawn synthetic competition of the same image size.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import AUTO, load_config, training_side  # noqa: E402
from pipeline.data import Prepared, load_prepared  # noqa: E402
from pipeline.training.augment import Normalizer, make_train_loader  # noqa: E402
from pipeline.training.models import autocast, model_on, pick_device  # noqa: E402
from pipeline.training.speed import CHANNELS_LAST_CANDIDATES, PRECISION_CANDIDATES  # noqa: E402
from pipeline.training.step import TrainStep  # noqa: E402


def pipeline_rate(data: Prepared, config, device, steps: int, warmup: int) -> float:
    """Images/s of TrainStep fed by the training loader and its augmentations (batched, or per image in loader
    processes)."""
    model = model_on(config, data.channels, len(data.classes), device).train()
    loader = make_train_loader(np.asarray(data.train_images), data.train_labels, config, seed=0)
    step = TrainStep(
        model, config, Normalizer.of_model(config, data, device), len(data.classes), steps_per_epoch=len(loader)
    )
    done, started = 0, None
    while done < warmup + steps:
        for images, labels in loader:
            if done == warmup:
                wait_for_device(device)
                started = time.perf_counter()
            step(images, labels)
            done += 1
            if done == warmup + steps:
                break
    wait_for_device(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def in_memory_rate(data: Prepared, config, device, steps: int, warmup: int) -> float:
    """Images/s of the same model and optimizer on a random batch already on the device."""
    model = model_on(config, data.channels, len(data.classes), device).train()
    size = training_side(config, data.train_images.shape[1])
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    x = torch.randn(config.batch_size, data.channels, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, len(data.classes), (config.batch_size,), device=device)
    optimizer = TrainStep(
        model, config, Normalizer(0, 1, None, device, False), len(data.classes), steps + warmup
    ).optimizer
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    for i in range(warmup + steps):
        if i == warmup:
            wait_for_device(device)
            started = time.perf_counter()
        with autocast(device, config.precision):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    wait_for_device(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def wait_for_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_data(path: Path | None, params: str) -> Prepared:
    if path is not None:
        return load_prepared(path)
    # Drawn in child processes: OpenCV used here before the loader forks can hang its workers.
    folder = Path(tempfile.mkdtemp(prefix="throughput-"))
    root = Path(__file__).resolve().parents[1]
    for stage in (
        ["synthesize", "--out", str(folder / "synthetic")],
        ["prepare", "--source", str(folder / "synthetic" / "competition"), "--out", str(folder / "prepared")],
    ):
        subprocess.run(
            [sys.executable, "-m", "pipeline", *stage, "--params", str(Path(params).resolve())], cwd=root, check=True
        )
    return load_prepared(folder / "prepared")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, help="prepared dataset folder (default: a synthetic one)")
    parser.add_argument("--backbone", nargs="*", help="backbones from params.yaml (default: all)")
    parser.add_argument("--precision", nargs="*", help="precisions to compare (default: each backbone's own)")
    parser.add_argument(
        "--channels-last",
        nargs="*",
        choices=["yes", "no"],
        help="memory formats to compare (default: each backbone's own)",
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    config = load_config(args.params)
    data = load_data(args.data, args.params)
    device = pick_device()
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, images {data.train_images.shape[1:]}, {args.steps} "
        f"steps after {args.warmup} warm-up"
    )
    width = max(len("backbone"), *map(len, args.backbone or list(config.backbones))) + 2
    print(
        f"{'backbone':<{width}}{'precision':<10}{'chan-last':<10}{'batch':>6}"
        f"{'pipeline img/s':>16}{'in-memory img/s':>17}{'ratio':>7}"
    )
    for name in args.backbone or list(config.backbones):
        base = config.backbone(name)
        # `auto` (what pipeline/training/speed.py chooses from in a run): every candidate, so the choice can be checked
        precisions = args.precision or (list(PRECISION_CANDIDATES) if base.precision == AUTO else [base.precision])
        layouts = (
            [c == "yes" for c in args.channels_last]
            if args.channels_last
            else (list(CHANNELS_LAST_CANDIDATES) if base.channels_last == AUTO else [base.channels_last])
        )
        for precision in precisions:
            for channels_last in layouts:
                run = dataclasses.replace(base, precision=precision, channels_last=channels_last)
                ours = pipeline_rate(data, run, device, args.steps, args.warmup)
                ideal = in_memory_rate(data, run, device, args.steps, args.warmup)
                print(
                    f"{name:<{width}}{precision:<10}{str(channels_last):<10}{run.batch_size:>6}"
                    f"{ours:>16.0f}{ideal:>17.0f}{ours / ideal:>7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
