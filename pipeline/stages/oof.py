"""Stage `oof@<backbone>`: put a backbone's folds together and score its out-of-fold predictions.

The one stage that reads a backbone's fold outputs in models/; later stages read what it writes:
oof/<backbone>.csv (with TTA) and oof/<backbone>.no_tta.csv in the OOF schema (id, fold, label,
pred, one probability column per class); test_predictions/<backbone>.csv (id, one probability
column per class: the fold models and TTA views averaged); and metrics/<backbone>.json: accuracy
overall, per fold and per class, log-loss, and the gain from TTA. When the data has regression
targets, every table gets one column of predicted values per target (TTA-averaged like the
probabilities) and the metrics a `targets` block: per target RMSE and CCC with 95% bootstrap
intervals and the count of non-missing rows they are scored on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.affect import target_scores
from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.files import write_csv, write_json
from pipeline.metrics import score
from pipeline.predictions import BackbonePredictions, load_backbone, oof_table, probability_table, with_targets


def backbone_metrics(predictions: BackbonePredictions, classes: list[str]) -> dict:
    tta = score(predictions.oof_tta, predictions.labels, predictions.folds, classes)
    plain = score(predictions.oof_plain, predictions.labels, predictions.folds, classes)
    return {**tta, "accuracy_no_tta": plain["accuracy"], "tta_gain": tta["accuracy"] - plain["accuracy"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline oof", description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="folder of train outputs (models/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the OOF tables (oof/)")
    parser.add_argument("--test-out", type=Path, required=True, help="folder for the test probabilities (test_predictions/)")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    names = data.target_names
    predictions = load_backbone(args.models, args.backbone, config.folds.ids, data.classes, data.train_ids, names)
    metrics = backbone_metrics(predictions, data.classes)
    p = predictions
    if names:
        metrics["targets"] = target_scores(p.oof_tta_values, data.train_targets, names)
    write_csv(with_targets(oof_table(p.ids, p.folds, p.labels, p.oof_tta, data.classes), p.oof_tta_values, names),
              args.out / f"{args.backbone}.csv")
    write_csv(with_targets(oof_table(p.ids, p.folds, p.labels, p.oof_plain, data.classes), p.oof_plain_values, names),
              args.out / f"{args.backbone}.no_tta.csv")
    write_csv(with_targets(probability_table(p.test_ids, p.test, data.classes), p.test_values, names),
              args.test_out / f"{args.backbone}.csv")
    write_json(metrics, args.metrics)
    folds = np.array(list(metrics["per_fold"].values()))
    print(f"oof {args.backbone}: accuracy {metrics['accuracy']:.4f} (folds {folds.mean():.4f} ± {folds.std():.4f}), "
          f"without TTA {metrics['accuracy_no_tta']:.4f}, log-loss {metrics['log_loss']:.4f}"
          + "".join(f", {name} CCC {s['ccc']:.4f} RMSE {s['rmse']:.4f}" for name, s in metrics.get("targets", {}).items())
          + f" → {args.out}/{args.backbone}.csv, {args.metrics}")
