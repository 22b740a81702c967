"""Stage `teach@<backbone>`: what a teacher's fold models say about the images its fold's students learn from.

For each fold k, the fold-k model's class probabilities on every train image outside fold k (its own training
images, in the plain view: in-sample, test-time views add little) and on the test images (under its
views, as `oof@` made them: test_predictions/<backbone>.folds.csv). Written to teachers/<backbone>/probs.npz:
`train` (folds × train images × classes, NaN on each fold's own rows, which its students never train on), `test`
(folds × test images × classes), `folds` and the prepared data's `fingerprint`; beside it a copy of each fold
model (fold<k>.safetensors), which a student may start from (`distill.init_from`). `distill@` reads fold k's
rows and model for fold k's student only (pipeline/training/distillation.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import Rows, load_folds, load_prepared
from pipeline.evaluation.predictions import fold_dir, read_fold_test_tables
from pipeline.files import atomic_dir
from pipeline.training.augment import Normalizer, plain_view
from pipeline.training.distillation import PROBS_FILE, WEIGHTS_FILE
from pipeline.training.models import load_trained, pick_device
from pipeline.training.predict import predict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline teach", description=__doc__)
    parser.add_argument("--backbone", required=True, help="a teacher: one of `distill.teachers`")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV")
    parser.add_argument("--models", type=Path, required=True, help="folder of train outputs (models/)")
    parser.add_argument("--test", type=Path, required=True, help="folder of the test probabilities (test_predictions/)")
    parser.add_argument("--out", type=Path, required=True, help="the teacher's folder (teachers/<backbone>)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    folds = config.folds.ids
    num_classes = len(data.classes)
    device = pick_device()
    train = np.full((len(folds), len(data.train_ids), num_classes), np.nan, np.float32)
    for position, fold in enumerate(folds):
        weights = fold_dir(args.models, args.backbone, fold) / "model.safetensors"
        model, trained = load_trained(weights, data.channels, num_classes + len(data.target_names), device)
        rows = np.flatnonzero(fold_of != fold)
        view = (plain_view(trained.augment),)
        normalize = Normalizer.of_model(trained, data, device)
        probs, _ = predict(model, Rows(data.train_images, rows), normalize, trained, view, num_classes, False)
        train[position, rows] = probs
        print(
            f"teach {args.backbone} fold {fold}: {len(rows)} train images, accuracy on them (in-sample) "
            f"{np.mean(probs.argmax(1) == data.train_labels[rows]):.4f}"
        )
    test = np.stack(read_fold_test_tables(args.test / f"{args.backbone}.folds.csv", data.classes, data.test_ids, folds))
    with atomic_dir(args.out) as tmp:
        with open(tmp / PROBS_FILE, "wb") as handle:
            np.savez(
                handle, train=train, test=test.astype(np.float32), folds=np.array(folds), fingerprint=data.fingerprint
            )
        for fold in folds:
            shutil.copyfile(
                fold_dir(args.models, args.backbone, fold) / "model.safetensors", tmp / WEIGHTS_FILE.format(fold)
            )
    print(f"teach {args.backbone}: {len(folds)} fold models → {args.out}")
