"""Stage `oof@<backbone>`: a backbone's fold models scored on their validation folds and the test set,
under the test-time views of `tta`, and their out-of-fold predictions put together and scored.

The one stage that gathers the fold runs' plain predictions (oof_plain.csv); later stages read what it writes:
oof/<backbone>.csv (with the views) and oof/<backbone>.no_tta.csv (the plain view, from `train`) in
the OOF schema (id, fold, label, pred, one probability column per class); test_predictions/<backbone>.csv
(id, one probability column per class: the fold models and views averaged) and
test_predictions/<backbone>.folds.csv (the same per fold model, with a fold column); and
metrics/<backbone>.json: the competition's metric overall and per fold (`score`, `score_per_fold`, and without
the views `score_no_tta`), accuracy overall, per fold and per class, log-loss, and the views' accuracy gain.
When the data has regression targets, every table gets one column of predicted values per target
(averaged like the probabilities) and the metrics a `targets` block: per target RMSE and CCC with 95%
bootstrap intervals and the count of non-missing rows they are scored on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.data import Prepared, Rows, load_folds, load_prepared
from pipeline.evaluation.affect import target_scores
from pipeline.evaluation.metrics import competition_metric, score
from pipeline.evaluation.predictions import fold_dir, load_plain_oof, oof_table, probability_table, with_targets
from pipeline.files import write_csv, write_json
from pipeline.training.augment import Normalizer
from pipeline.training.models import load_trained, pick_device
from pipeline.training.predict import predict


def fold_predictions(weights: Path, data: Prepared, valid_index: np.ndarray, views: tuple[dict, ...]):
    """A fold model's (validation probabilities, values) and (test probabilities, values) under `views`."""
    device = pick_device()
    num_classes = len(data.classes)
    model, config = load_trained(weights, data.channels, num_classes + len(data.target_names), device)
    normalize = Normalizer.of_model(config, data, device)
    valid = predict(
        model, Rows(data.train_images, valid_index), normalize, config, views, num_classes, data.multi_label
    )
    test = predict(model, data.test_images, normalize, config, views, num_classes, data.multi_label)
    return valid, test


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline oof", description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV")
    parser.add_argument("--models", type=Path, required=True, help="folder of train outputs (models/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the OOF tables (oof/)")
    parser.add_argument(
        "--test-out", type=Path, required=True, help="folder for the test probabilities (test_predictions/)"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    views = config.tta.of(args.backbone)
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    names, classes = data.target_names, data.classes
    plain = load_plain_oof(
        args.models, args.backbone, config.folds.ids, classes, data.train_ids, names, data.multi_label
    )
    oof_probs, oof_values = np.zeros_like(plain.probs), np.zeros_like(plain.values)
    test_tables, fold_test_probs, fold_test_values = [], [], []
    for fold in config.folds.ids:
        valid_index = np.flatnonzero(fold_of == fold)
        (probs, values), (test_probs, test_values) = fold_predictions(
            fold_dir(args.models, args.backbone, fold) / "model.safetensors", data, valid_index, views
        )
        oof_probs[valid_index], oof_values[valid_index] = probs, values
        fold_test_probs.append(test_probs.astype(np.float64))
        fold_test_values.append(test_values.astype(np.float64))
        fold_column = np.full(len(test_probs), fold)
        test_tables.append(
            with_targets(probability_table(data.test_ids, test_probs, classes, fold=fold_column), test_values, names)
        )
    by_fold = pd.concat(test_tables, ignore_index=True)
    test_probs, test_values = np.mean(fold_test_probs, axis=0), np.mean(fold_test_values, axis=0)
    metric = competition_metric(config.competition.metric, data.submission_form, data.multi_label)
    metrics = score(oof_probs, plain.labels, plain.folds, classes, metric)
    without_views = score(plain.probs, plain.labels, plain.folds, classes, metric)
    metrics |= {
        "accuracy_no_tta": without_views["accuracy"],
        "tta_gain": metrics["accuracy"] - without_views["accuracy"],
        "score_no_tta": without_views["score"],
    }
    if names:
        metrics["targets"] = target_scores(oof_values, data.train_targets, names)
    write_csv(
        with_targets(oof_table(plain.ids, plain.folds, plain.labels, oof_probs, classes), oof_values, names),
        args.out / f"{args.backbone}.csv",
    )
    write_csv(
        with_targets(oof_table(plain.ids, plain.folds, plain.labels, plain.probs, classes), plain.values, names),
        args.out / f"{args.backbone}.no_tta.csv",
    )
    write_csv(
        with_targets(probability_table(data.test_ids, test_probs, classes), test_values, names),
        args.test_out / f"{args.backbone}.csv",
    )
    write_csv(by_fold, args.test_out / f"{args.backbone}.folds.csv")
    write_json(metrics, args.metrics)
    folds = np.array(list(metrics["score_per_fold"].values()))
    print(
        f"oof {args.backbone}: {metric.name} {metrics['score']:.4f} (folds {folds.mean():.4f} ± {folds.std():.4f}), "
        f"without TTA {metrics['score_no_tta']:.4f}"
        + (f"; accuracy {metrics['accuracy']:.4f}" if metric.name != "accuracy" else "")
        + (f", log-loss {metrics['log_loss']:.4f}" if metric.name != "log_loss" else "")
        + "".join(f", {name} CCC {s['ccc']:.4f} RMSE {s['rmse']:.4f}" for name, s in metrics.get("targets", {}).items())
        + f" → {args.out}/{args.backbone}.csv, {args.metrics}"
    )
