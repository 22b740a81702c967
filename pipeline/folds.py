"""Stage `folds`: stratified K-fold assignment → folds/folds.csv (id, fold).

Images with identical pixels always share a fold: FER-2013 holds about 1,800 such repeats, and
splitting them across folds lets a model be scored on images it trained on, inflating OOF
accuracy. An optional groups file (id, group) keeps e.g. one subject's images together as well.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import FoldsConfig, PipelineError, load_config
from pipeline.data import load_prepared
from pipeline.files import write_csv


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Group number per image; images with identical bytes get the same number."""
    digests = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]
    return pd.factorize(pd.Series(digests))[0]


def merge_groupings(*groupings: np.ndarray) -> np.ndarray:
    """Connected components over several groupings: two images tied by any of them end together."""
    n = len(groupings[0])
    rows, cols = [], []
    for grouping in groupings:
        # Link every image to the first member of its group.
        first = pd.Series(np.arange(n)).groupby(grouping).transform("first").to_numpy()
        rows.append(np.arange(n))
        cols.append(first)
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_all)), (rows_all, cols_all)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def read_groups(path: str | Path, ids: np.ndarray) -> np.ndarray:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "group"} <= set(table.columns):
        raise PipelineError(f"{path}: folds.groups_csv needs columns id,group; found {list(table.columns)}")
    by_id = dict(zip(table["id"], table["group"]))
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise PipelineError(f"{path}: {len(missing)} train ids have no group (e.g. {missing[:3]}); add a row for each")
    return pd.factorize(pd.Series([by_id[i] for i in ids]))[0]


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
    write_csv(pd.DataFrame({"id": data.train_ids, "fold": fold}), args.out)
    repeated = len(groups) - len(np.unique(groupings[0]))
    sizes = np.bincount(fold).tolist()
    print(f"folds: {config.k} folds of sizes {sizes}; {repeated} repeated images kept with their twins → {args.out}")
