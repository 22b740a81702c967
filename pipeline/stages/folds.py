"""Stage `folds`: stratified K-fold assignment → folds/folds.csv (id, fold, group).

Images with identical pixels always share a fold: FER-2013 holds about 1,800 such repeats, and
splitting them across folds lets a model be scored on images it trained on, inflating OOF
accuracy. An optional groups file (id, group) keeps e.g. one subject's images together as well.
The `group` column records the result, so later stages can check it without recomputing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import FoldsConfig, PipelineError, load_config
from pipeline.data import load_prepared
from pipeline.files import write_csv
from pipeline.groups import duplicate_groups, merge_groupings, read_groups


def assign_folds(labels: np.ndarray, groups: np.ndarray, config: FoldsConfig) -> np.ndarray:
    smallest = np.bincount(labels).min()
    if smallest < config.k:
        raise PipelineError(f"the rarest class has {smallest} images, fewer than K={config.k} folds; use fewer folds.ids or drop that class (data.drop_classes)")
    splitter = StratifiedGroupKFold(n_splits=config.k, shuffle=True, random_state=config.seed)
    fold = np.full(len(labels), -1, np.int64)
    for number, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[valid] = number
    return fold


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline folds", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params).folds
    data = load_prepared(args.data)
    groupings = [duplicate_groups(data.train_images)]
    if config.groups_csv:
        groupings.append(read_groups(config.groups_csv, data.train_ids))
    groups = merge_groupings(*groupings)
    fold = assign_folds(data.train_labels, groups, config)
    write_csv(pd.DataFrame({"id": data.train_ids, "fold": fold, "group": groups}), args.out)
    repeated = len(groups) - len(np.unique(groupings[0]))
    sizes = np.bincount(fold).tolist()
    print(f"folds: {config.k} folds of sizes {sizes}; {repeated} repeated images kept with their twins → {args.out}")
