"""Groups of train images that must share a fold: pixel-identical images and user-given groups.

`folds` computes them and records each image's group in folds/folds.csv; `report` reads them back
from there to check that no group was split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.config import PipelineError


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
