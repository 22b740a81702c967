"""Ablation on one held-out fold: which choices buy accuracy on a competition, measured on OOF.

    python benchmarks/ablation.py --data data/prepared --folds folds/folds.csv          # every row
    python benchmarks/ablation.py --data ... --folds ... --rows base resnet18 --epochs 4
    python benchmarks/ablation.py --data ... --folds ... --rows base face_vgg --minutes 10   # equal wall-clock

With `--minutes`, every row trains for the same wall-clock time (train.time_budget_minutes: each run
measures its speed and trains the epochs that fit, `--epochs` being the most), which is how
backbones of different cost are compared fairly.

Every row trains once on the other folds and is scored on fold `--fold` (the same images for every
row), with three test-time settings: none, flip, and ten-crop (five shifted crops and their
mirrors); a row trained on random crops also with crop_ten (ten windows of its crop size). The rows
vary one thing at a time against `base` (params.yaml's `train` with the model and epochs given
here); the ensemble row blends the backbone rows (or `--blend` rows) with greedy weights
cross-fitted on two halves of the fold; the average row is the plain mean of the base model and its
variants (another seed, no label smoothing, EMA), a measure of what averaging the fold models adds
to test predictions and OOF cannot see. Finished rows are kept in `--work`, so an interrupted run
resumes, and the table is rewritten after every row to `--out` (.csv and .md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import TrainConfig, load_config  # noqa: E402
from pipeline.data import Prepared, load_folds, load_prepared  # noqa: E402
from pipeline.evaluation.blend import cross_fitted_blend  # noqa: E402
from pipeline.evaluation.metrics import METRICS  # noqa: E402
from pipeline.files import read_json, save_array, write_csv, write_json, write_text  # noqa: E402
from pipeline.training.augment import Normalizer, plain_view  # noqa: E402
from pipeline.training.fold_run import fit_fold  # noqa: E402
from pipeline.training.models import pick_device  # noqa: E402
from pipeline.training.predict import predict  # noqa: E402

TEN_CROP = tuple(
    {"scale": 1.09, "shift": [dx, dy], "hflip": flip}
    for dx, dy in [(0, 0), (-2, -2), (-2, 2), (2, -2), (2, 2)]
    for flip in (False, True)
)
TTA_SETTINGS = {"flip": ({}, {"hflip": True}), "ten_crop": TEN_CROP}  # "none" comes with the fold's run
CROP = 40  # the random-crop rows' window, as in Khaireddin & Chen 2021 (48 px faces, 40 px crops)


def crop_views(size: int, image_size: int) -> tuple[dict, ...]:
    """Ten windows of `size` px: the centre and the four corners of the face, and their mirrors."""
    reach = (image_size - size) // 2
    return tuple(
        {"crop": size, "shift": [dx, dy], "hflip": flip}
        for dx, dy in [(0, 0), (-reach, -reach), (-reach, reach), (reach, -reach), (reach, reach)]
        for flip in (False, True)
    )


# name -> (what it tests, overrides of the base config); epochs_factor and lr_factor multiply --epochs and the lr
ROWS: dict[str, tuple[str, dict]] = {
    "base": ("baseline", {}),
    "input_64": ("input resolution: upscaled 48→64", {"input_size": 64}),
    "input_96": ("input resolution: upscaled 48→96", {"input_size": 96}),
    "resnet18": ("backbone: ResNet-18", {"model": "resnet18"}),
    "convnext_atto": ("backbone: ConvNeXt-atto", {"model": "convnext_atto"}),
    "efficientnet_b0": ("backbone: EfficientNet-B0", {"model": "efficientnet_b0"}),
    "repvgg_a0": ("backbone: VGG-style (RepVGG-A0)", {"model": "repvgg_a0"}),
    "face_resnet10": ("backbone: ResNet-10, stride-1 stem, no max-pool", {"model": "face_resnet10"}),
    "face_resnet10_s2": ("backbone: ResNet-10, stride-2 stem, no max-pool", {"model": "face_resnet10_s2"}),
    "face_vgg": ("backbone: VGG-style, 32–256 wide", {"model": "face_vgg", "drop_path_rate": None}),
    "face_xception": ("backbone: mini-Xception", {"model": "face_xception", "drop_path_rate": None}),
    "channels_last": ("channels-last memory format", {"channels_last": True}),
    "epochs_x2": ("epochs ×2", {"epochs_factor": 2}),
    "label_smoothing_0": ("label smoothing 0 (base 0.1)", {"label_smoothing": 0.0}),
    "mixup_cutmix": ("mixup 0.2 + cutmix 1.0", {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}),
    "ema": ("EMA of weights, decay 0.998", {"ema_decay": 0.998}),
    "average_last_quarter": (
        "mean of the weights after each of the last quarter of the epochs",
        {"average_last_fraction": 0.25},
    ),
    "low_res_half": (
        "progressive resizing: the first half of the epochs on faces scaled ×0.75 (36 px for 48)",
        {"low_res_fraction": 0.5, "low_res_scale": 0.75},
    ),
    # against epochs_x2: what a longer schedule wants
    "epochs_x2_lr_x2": ("epochs ×2, learning rate ×2", {"epochs_factor": 2, "lr_factor": 2}),
    "epochs_x2_dropout": (
        "epochs ×2, dropout 0.3 + drop-path 0.1",
        {"epochs_factor": 2, "drop_rate": 0.3, "drop_path_rate": 0.1},
    ),
    # the from-scratch FER-2013 anchors' optimizer (Khaireddin & Chen 2021: SGD-Nesterov 0.9, lr 0.01, wd 1e-4)
    "sgd_nesterov": (
        "optimizer: SGD, Nesterov momentum 0.9, lr 0.01, weight decay 1e-4",
        {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4},
    ),
    "lr_x2": ("learning rate ×2", {"lr_factor": 2}),
    "augment_half": ("augmentation strength 0.5 (each transform's p halved)", {"augment_strength": 0.5}),
    "seed_1": ("another seed: the same recipe, other initial weights and batches", {"seed": 1}),
    # trained on random 40 px windows, scored on the whole 48 px face (none, flip, ten_crop) and on ten windows
    # (crop_ten)
    "random_crop_40": (
        "random 40 px crops in training (then whole faces, or ten 40 px windows at test)",
        {"augment_first": ({"RandomCrop": {"height": CROP, "width": CROP}},)},
    ),
    "augment_per_image": (
        "augmentations per image with albumentations in the loader, not batched in torch",
        {"augment_on": "loader"},
    ),
    # imbalanced classes (train.class_balance), judged by balanced accuracy and macro-F1 as well as accuracy
    "class_weights": ("loss weighted by inverse class frequency", {"class_balance": "weights"}),
    "balanced_sampler": ("batches drawn class-balanced, with replacement", {"class_balance": "sampler"}),
    "logit_adjustment": ("loss on logits + log class prior (Menon et al. 2021)", {"class_balance": "logit_adjustment"}),
}
BACKBONE_ROWS = (
    "base",
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "repvgg_a0",
    "face_resnet10",
    "face_resnet10_s2",
    "face_vgg",
    "face_xception",
)
# Same backbone, same data, small differences: how much a plain average of models gains, which is
# roughly what averaging the K fold models adds to the test predictions and OOF does not see.
AVERAGE_ROWS = ("base", "seed_1", "label_smoothing_0", "ema")

log = logging.getLogger("ablation")


def row_config(base: TrainConfig, overrides: dict, epochs: int, minutes: float | None, folds: int) -> TrainConfig:
    """The row's settings; with `minutes`, its one fold run gets that wall-clock budget (the pipeline's
    budget is for K fold runs together) and `epochs` is only the upper bound."""
    overrides = dict(overrides)
    epochs_factor = overrides.pop("epochs_factor", 1)
    lr = overrides.pop("lr", base.lr) * overrides.pop("lr_factor", 1)
    overrides["augment"] = overrides.pop("augment_first", ()) + base.augment
    budget = None if minutes is None else minutes * folds
    return dataclasses.replace(
        base, epochs=epochs * epochs_factor, lr=lr, keep_epoch="last", time_budget_minutes=budget, **overrides
    )


def run_row(name: str, config: TrainConfig, data: Prepared, fold_of: np.ndarray, fold: int, work: Path) -> dict:
    """Train one row (or read it back from `work`) and score every TTA setting on the held-out fold."""
    done = work / f"{name}.json"
    if done.exists() and same_settings(read_json(done)["config"], config):
        return read_json(done)
    run = fit_fold(data, fold_of, fold, config, label=name)
    labels = data.train_labels[run.valid_index]
    trained = run.config  # `auto` speed settings resolved
    normalize = Normalizer.of_model(trained, data, pick_device())
    result = {
        "row": name,
        "model": config.model,
        "input": config.input_size or data.train_images.shape[1],
        "epochs": len(run.fit.history),
        "precision": trained.precision,
        "channels_last": trained.channels_last,
        "train_img_s": float(np.median([r.train_images_per_s for r in run.fit.history])),
        "train_min": run.seconds / 60,
        "config": dataclasses.asdict(config),
    }
    result["acc_none"] = float((run.oof_plain.argmax(1) == labels).mean())  # fit_fold scored the plain view already
    save_array(run.oof_plain, work / f"{name}.none.npy")
    crop = plain_view(config.augment).get("crop")
    settings = {**TTA_SETTINGS, **({"crop_ten": crop_views(crop, data.train_images.shape[1])} if crop else {})}
    for setting, views in settings.items():
        started = time.perf_counter()
        probs = predict(run.fit.model, data.train_images[run.valid_index], normalize, trained, views=views)[0]
        result[f"acc_{setting}"] = float((probs.argmax(1) == labels).mean())
        if setting == "flip":  # the imbalance rows' other measures
            result["bal_acc_flip"] = METRICS["balanced_accuracy"](probs, labels)
            result["macro_f1_flip"] = METRICS["macro_f1"](probs, labels)
        result[f"ms_per_img_{setting}"] = 1000 * (time.perf_counter() - started) / len(labels)
        save_array(probs, work / f"{name}.{setting}.npy")
    write_json(result, done)
    return result


def same_settings(stored: dict, config: TrainConfig) -> bool:
    """A finished row still stands if its settings equal `config`'s; keys added to TrainConfig since
    then must hold the project's params.yaml values (they did not exist, so the row ran as if they did)."""
    current = json.loads(json.dumps(dataclasses.asdict(config)))  # as stored: tuples become lists
    defaults = json.loads(json.dumps(dataclasses.asdict(load_config(ROOT / "params.yaml").train)))
    return all(stored.get(key, defaults[key]) == value for key, value in current.items())


def finished_rows(work: Path) -> dict[str, dict]:
    """Every row finished in `work`, in the order of ROWS."""
    return {
        name: {**read_json(work / f"{name}.json"), "what": ROWS[name][0]}
        for name in ROWS
        if (work / f"{name}.json").exists()
    }


def ensemble_row(
    results: dict[str, dict],
    labels: np.ndarray,
    work: Path,
    seed: int,
    max_steps: int,
    blend: tuple[str, ...] = BACKBONE_ROWS,
) -> dict | None:
    """Greedy blend of the `blend` rows (flip TTA, crop views for crop rows), weights cross-fitted on two random
    halves."""
    members = [name for name in blend if name in results]
    if len(members) < 2:
        return None
    halves = np.random.default_rng(seed).integers(0, 2, len(labels))
    probs = scored_probs(members, work)
    blended = cross_fitted_blend(probs, labels, halves, max_steps)
    accuracy = {name: float((p.argmax(1) == labels).mean()) for name, p in zip(members, probs)}
    best = max(members, key=accuracy.get)
    return combined_row(
        "ensemble",
        f"greedy blend of {', '.join(members)} (best single: {best}, {accuracy[best]:.4f})",
        members,
        results,
        blended,
        labels,
    )


def average_row(results: dict[str, dict], labels: np.ndarray, work: Path) -> dict | None:
    """Plain average of the AVERAGE_ROWS models (flip TTA) against their mean single accuracy."""
    members = [name for name in AVERAGE_ROWS if name in results]
    if len(members) < 2:
        return None
    mean_single = np.mean([results[name]["acc_flip"] for name in members])
    return combined_row(
        "average",
        f"plain average of {', '.join(members)} (mean single: {mean_single:.4f})",
        members,
        results,
        np.mean(scored_probs(members, work), axis=0),
        labels,
    )


def scored_probs(members: list[str], work: Path) -> list[np.ndarray]:
    """Each row's flip TTA probabilities, or its crop views' for a row trained on crops (whole faces are not what it
    learned)."""
    return [
        np.load(work / f"{name}.crop_ten.npy")
        if (work / f"{name}.crop_ten.npy").exists()
        else np.load(work / f"{name}.flip.npy")
        for name in members
    ]


def combined_row(
    row: str, what: str, members: list[str], results: dict[str, dict], probs: np.ndarray, labels: np.ndarray
) -> dict:
    """A table row for predictions combined from several finished rows (flip TTA only)."""
    return {
        "row": row,
        "what": what,
        "model": "+".join(results[name]["model"] for name in members),
        "acc_flip": float((probs.argmax(1) == labels).mean()),
        "train_min": sum(results[name]["train_min"] for name in members),
    }


def write_table(rows: list[dict], out: Path) -> None:
    columns = [
        "row",
        "what",
        "model",
        "input",
        "epochs",
        "acc_none",
        "acc_flip",
        "acc_ten_crop",
        "acc_crop_ten",
        "bal_acc_flip",
        "macro_f1_flip",
        "train_img_s",
        "train_min",
        "ms_per_img_flip",
        "ms_per_img_ten_crop",
        "ms_per_img_crop_ten",
    ]
    table = pd.DataFrame(rows).reindex(columns=columns)
    write_csv(table, out.with_suffix(".csv"))
    write_text(markdown(table), out.with_suffix(".md"))


def markdown(table: pd.DataFrame) -> str:
    def cell(column: str, value) -> str:
        if isinstance(value, float) and np.isnan(value):
            return "–"
        if column.startswith(("acc_", "bal_acc_", "macro_f1_")):
            return f"{value:.4f}"
        if isinstance(value, float):
            return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(c, v) for c, v in zip(table.columns, row)) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (`dvc repro prepare`)")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV (`dvc repro folds`)")
    parser.add_argument("--fold", type=int, default=0, help="the held-out fold every row is scored on")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the base row")
    parser.add_argument("--model", default="resnet10t", help="backbone of the base row")
    parser.add_argument(
        "--minutes", type=float, help="equal wall-clock: every row's training minutes (default: --epochs)"
    )
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument(
        "--blend",
        nargs="+",
        choices=list(ROWS),
        default=list(BACKBONE_ROWS),
        help="rows the ensemble row blends (default: the backbone rows)",
    )
    parser.add_argument("--params", default="params.yaml")
    work = Path("benchmarks/results/ablation_work")
    parser.add_argument(
        "--work", type=Path, default=work, help="finished rows and their OOF probabilities (not for git)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    config = load_config(args.params)
    base = dataclasses.replace(config.train, model=args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    labels = data.train_labels[fold_of == args.fold]
    for name in args.rows:
        result = run_row(
            name,
            row_config(base, ROWS[name][1], args.epochs, args.minutes, len(np.unique(fold_of))),
            data,
            fold_of,
            args.fold,
            args.work,
        )
        log.info(
            "%s: none %.4f  flip %.4f  ten-crop %.4f  (%.1f min)",
            name,
            result["acc_none"],
            result["acc_flip"],
            result["acc_ten_crop"],
            result["train_min"],
        )
        results = finished_rows(args.work)  # the table holds rows from earlier invocations too
        combined = [
            ensemble_row(results, labels, args.work, base.seed, config.ensemble.max_steps, tuple(args.blend)),
            average_row(results, labels, args.work),
        ]
        write_table(list(results.values()) + [row for row in combined if row], args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
