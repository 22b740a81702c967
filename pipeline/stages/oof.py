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

from pipeline.config import load_config
from pipeline.data import load_folds, load_prepared
from pipeline.training.scoring import score_member


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
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    score_member(config, args.backbone, data, fold_of, args.models, args.out, args.test_out, args.metrics)
