"""Stage `folds`: stratified K-fold assignment → folds/folds.csv (id, fold, group).

Images with identical pixels always share a fold: FER-2013 holds about 1,800 such repeats, and
splitting them across folds lets a model be scored on images it trained on, inflating OOF
accuracy. Optional groups keep e.g. one subject's images together as well: a key taken from each
file name (folds.group_pattern, '^(S[0-9]+)_' for CK+'s S010_004_00000017.png) and a groups file
(folds.groups_csv: id, group). The `group` column records the result, so later stages can check it
without recomputing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.evaluation.splits import assign_folds, fold_groups
from pipeline.files import write_csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline folds", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params).folds
    data = load_prepared(args.data)
    groups, notes = fold_groups(data.train_files, data.train_ids, data.train_images, config)
    fold = assign_folds(data.train_labels, groups, config)
    write_csv(pd.DataFrame({"id": data.train_ids, "fold": fold, "group": groups}), args.out)
    sizes = np.bincount(fold).tolist()
    print(f"folds: {config.k} folds of sizes {sizes}; {'; '.join(notes)} → {args.out}")
