"""A member's fold models scored on their validation folds and the test set under its test-time views, their
out-of-fold predictions put together and scored: what `oof@<backbone>` writes, and `distill@<student>` for its
student (the tables and metrics are described in pipeline/stages/oof.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.data import Prepared, Rows
from pipeline.evaluation.affect import target_scores
from pipeline.evaluation.metrics import Metric, competition_metric, score
from pipeline.evaluation.predictions import (
    HOLDOUT_SUFFIX,
    fold_dir,
    holdout_table,
    load_plain_oof,
    oof_table,
    probability_table,
    with_targets,
)
from pipeline.files import write_csv, write_json
from pipeline.training.augment import Normalizer
from pipeline.training.models import load_trained, pick_device
from pipeline.training.predict import predict


def fold_predictions(weights: Path, data: Prepared, valid_index: np.ndarray, views: tuple[dict, ...]):
    """A fold model's (validation probabilities, values), (test probabilities, values) and holdout probabilities
    (None without a holdout) under `views`."""
    device = pick_device()
    num_classes = len(data.classes)
    model, config = load_trained(weights, data.channels, num_classes + len(data.target_names), device)
    normalize = Normalizer.of_model(config, data, device)
    valid = predict(
        model, Rows(data.train_images, valid_index), normalize, config, views, num_classes, data.multi_label
    )
    test = predict(model, data.test_images, normalize, config, views, num_classes, data.multi_label)
    holdout = None
    if data.has_holdout:
        holdout = predict(model, data.holdout_images, normalize, config, views, num_classes, data.multi_label)[0]
    return valid, test, holdout


def holdout_scores(fold_probs: list[np.ndarray], labels: np.ndarray, metric: Metric) -> dict:
    """The holdout scored as a submission scores the test: the fold models' average, beside their mean score alone
    (the difference is what averaging the fold models gains, measured with labels)."""
    averaged = metric(np.mean(fold_probs, axis=0), labels)
    alone = float(np.mean([metric(probs, labels) for probs in fold_probs]))
    return {
        "images": len(labels),
        "score": averaged,
        "fold_model_score": alone,
        "fold_averaging_gain": metric.gain(averaged, over=alone),
    }


def score_member(
    config: Config,
    name: str,
    data: Prepared,
    fold_of: np.ndarray,
    models_dir: Path,
    oof_dir: Path,
    test_dir: Path,
    metrics_path: Path,
) -> dict:
    """Score `name`'s fold models in `models_dir`; write oof_dir/<name>.csv and .no_tta.csv, test_dir/<name>.csv,
    .folds.csv and .holdout.csv, and `metrics_path`; return the metrics."""
    views = config.tta.of(name)
    names, classes = data.target_names, data.classes
    plain = load_plain_oof(models_dir, name, config.folds.ids, classes, data.train_ids, names, data.multi_label)
    oof_probs, oof_values = np.zeros_like(plain.probs), np.zeros_like(plain.values)
    test_tables, fold_test_probs, fold_test_values, fold_holdout_probs = [], [], [], []
    for fold in config.folds.ids:
        valid_index = np.flatnonzero(fold_of == fold)
        (probs, values), (test_probs, test_values), holdout_probs = fold_predictions(
            fold_dir(models_dir, name, fold) / "model.safetensors", data, valid_index, views
        )
        if holdout_probs is not None:
            fold_holdout_probs.append(holdout_probs.astype(np.float64))
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
    if data.has_holdout:
        metrics["holdout"] = holdout_scores(fold_holdout_probs, data.holdout_labels, metric)
    if names:
        metrics["targets"] = target_scores(oof_values, data.train_targets, names)
    write_csv(
        with_targets(oof_table(plain.ids, plain.folds, plain.labels, oof_probs, classes), oof_values, names),
        oof_dir / f"{name}.csv",
    )
    write_csv(
        with_targets(oof_table(plain.ids, plain.folds, plain.labels, plain.probs, classes), plain.values, names),
        oof_dir / f"{name}.no_tta.csv",
    )
    write_csv(
        with_targets(probability_table(data.test_ids, test_probs, classes), test_values, names),
        test_dir / f"{name}.csv",
    )
    write_csv(by_fold, test_dir / f"{name}.folds.csv")
    write_csv(
        holdout_table(data.holdout_ids, data.holdout_labels, classes, dict(zip(config.folds.ids, fold_holdout_probs))),
        test_dir / f"{name}{HOLDOUT_SUFFIX}",
    )
    write_json(metrics, metrics_path)
    folds = np.array(list(metrics["score_per_fold"].values()))
    print(
        f"oof {name}: {metric.name} {metrics['score']:.4f} (folds {folds.mean():.4f} ± {folds.std():.4f}), "
        f"without TTA {metrics['score_no_tta']:.4f}"
        + (f"; accuracy {metrics['accuracy']:.4f}" if metric.name != "accuracy" else "")
        + (f", log-loss {metrics['log_loss']:.4f}" if metric.name != "log_loss" else "")
        + "".join(
            f", {target} CCC {s['ccc']:.4f} RMSE {s['rmse']:.4f}" for target, s in metrics.get("targets", {}).items()
        )
        + (
            f"; holdout {metrics['holdout']['score']:.4f} fold-averaged, "
            f"{metrics['holdout']['fold_averaging_gain']:+.4f} over one fold model"
            if data.has_holdout
            else ""
        )
        + f" → {oof_dir}/{name}.csv, {metrics_path}"
    )
    return metrics
