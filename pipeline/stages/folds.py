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
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import FoldsConfig, load_config
from pipeline.data import Prepared, load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.groups import duplicate_groups, merge_groupings, pattern_groups, read_groups
from pipeline.files import write_csv


def assign_folds(labels: np.ndarray, groups: np.ndarray, config: FoldsConfig) -> np.ndarray:
    smallest = np.bincount(labels).min()
    if smallest < config.k:
        raise PipelineError(
            f"the rarest class has {smallest} images, fewer than K={config.k} folds; use fewer folds.ids or drop that "
            "class (data.drop_classes)"
        )
    count = len(np.unique(groups))
    if count < config.k:
        raise PipelineError(
            f"the train images form {count} groups that must each stay in one fold, fewer than K={config.k} folds; "
            "use fewer folds.ids or finer groups (folds.group_pattern, folds.groups_csv)"
        )
    splitter = StratifiedGroupKFold(n_splits=config.k, shuffle=True, random_state=config.seed)
    fold = np.full(len(labels), -1, np.int64)
    for number, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[valid] = number
    return fold


def fold_groups(data: Prepared, config: FoldsConfig) -> tuple[np.ndarray, list[str]]:
    """Group number per image (tied by name key, groups file or identical pixels), and a note per grouping."""
    given = {}
    # The name pattern first: a pattern that misses some names fails in a moment, before any image is read.
    if config.group_pattern:
        given["folds.group_pattern"] = pattern_groups(data.train_files, config.group_pattern)
    if config.groups_csv:
        given["folds.groups_csv"] = read_groups(config.groups_csv, data.train_ids)
    twins = duplicate_groups(data.train_images)
    notes = [group_note(groups, key) for key, groups in given.items()]
    notes.append(f"{len(twins) - len(np.unique(twins))} repeated images kept with their twins")
    return merge_groupings(twins, *given.values()), notes


def group_note(groups: np.ndarray, key: str) -> str:
    count = len(np.unique(groups))
    return f"{count} groups from {key} (mean {len(groups) / count:.1f} images each)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline folds", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params).folds
    data = load_prepared(args.data)
    groups, notes = fold_groups(data, config)
    fold = assign_folds(data.train_labels, groups, config)
    write_csv(pd.DataFrame({"id": data.train_ids, "fold": fold, "group": groups}), args.out)
    sizes = np.bincount(fold).tolist()
    print(f"folds: {config.k} folds of sizes {sizes}; {'; '.join(notes)} → {args.out}")
