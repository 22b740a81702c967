"""Stage `oof@<backbone>`: put a backbone's folds together and score its out-of-fold predictions.

The one stage that reads a backbone's fold outputs in models/; later stages read what it writes:
oof/<backbone>.csv (with TTA) and oof/<backbone>.no_tta.csv in the OOF schema (id, fold, label,
pred, one probability column per class); test_predictions/<backbone>.csv (id, one probability
column per class: the fold models and TTA views averaged); and metrics/<backbone>.json: accuracy
overall, per fold and per class, log-loss, and the gain from TTA.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.files import write_csv, write_json
from pipeline.metrics import score
from pipeline.predictions import BackbonePredictions, load_backbone, oof_table, probability_table


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
    predictions = load_backbone(args.models, args.backbone, config.folds.ids, data.classes, data.train_ids)
    metrics = backbone_metrics(predictions, data.classes)
    p = predictions
    write_csv(oof_table(p.ids, p.folds, p.labels, p.oof_tta, data.classes), args.out / f"{args.backbone}.csv")
    write_csv(oof_table(p.ids, p.folds, p.labels, p.oof_plain, data.classes), args.out / f"{args.backbone}.no_tta.csv")
    write_csv(probability_table(p.test_ids, p.test, data.classes), args.test_out / f"{args.backbone}.csv")
    write_json(metrics, args.metrics)
    folds = np.array(list(metrics["per_fold"].values()))
    print(f"oof {args.backbone}: accuracy {metrics['accuracy']:.4f} (folds {folds.mean():.4f} ± {folds.std():.4f}), "
          f"without TTA {metrics['accuracy_no_tta']:.4f}, log-loss {metrics['log_loss']:.4f} → {args.out}/{args.backbone}.csv, {args.metrics}")
