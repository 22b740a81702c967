"""Groups of train images that must share a fold: pixel-identical images and user-given groups.

`folds` computes them and records each image's group in folds/folds.csv; `report` reads them back
from there to check that no group was split, and guesses from the file names whether groups were
needed but not given (`shared_name_prefixes`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.errors import PipelineError


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


def file_name(file: str) -> str:
    """The last path component of a train file as `prepare` records it (`train/happy/S010_1.png`, `fer2013.csv:12`)."""
    return re.split(r"[/\\]", str(file))[-1]


def pattern_groups(files: np.ndarray, pattern: str) -> np.ndarray:
    """Group number per image: the first group of `pattern` searched in each file name is its key."""
    compiled = re.compile(pattern)
    names = [file_name(f) for f in files]
    matches = [compiled.search(name) for name in names]
    # A group that took no part in the match (`(S\d+)?`) yields None: the name has no key either.
    unmatched = [name for name, m in zip(names, matches) if m is None or m.group(1) is None]
    if unmatched:
        raise PipelineError(
            f"folds.group_pattern {pattern!r} finds no group key in {len(unmatched)} of {len(names)} train file names "
            f"(e.g. {unmatched[0]!r}); adjust folds.group_pattern so its group matches in every name, e.g. make a part "
            "those names lack optional ('_?' rather than '_'), or set it to null"
        )
    keys = [m.group(1) for m in matches]
    empty = [name for name, key in zip(names, keys) if key == ""]
    if empty:
        raise PipelineError(
            f"folds.group_pattern {pattern!r} captures an empty group key in {len(empty)} of {len(names)} train file "
            "names "
            f"(e.g. {empty[0]!r}), which would put them all in one group; make its group match at least one character "
            "(e.g. '^([^_]+)_' rather than '^([^_]*)')"
        )
    return pd.factorize(pd.Series(keys))[0]


# The leading token of a file name: what precedes its first separator (S010 in S010_004_00000017.png).
NAME_SEPARATORS = re.compile(r"[_\-. ]")
# Prefixes shared across classes must cover at least this share of the images to suggest subjects:
# a few stray shared prefixes among unique names (hash ids) are chance, not a naming scheme.
SHARED_PREFIX_COVERAGE = 0.5
# ... and hold at least this many images each on average: one or two images per prefix is what
# numbered or hashed names give, and splitting pairs inflates OOF little.
SHARED_PREFIX_MEAN_IMAGES = 3.0


@dataclass(frozen=True)
class SharedPrefixes:
    """File-name prefixes that images of several classes share: likely subjects or sessions."""

    count: int  # prefixes shared by images of >= 2 classes
    mean_images: float  # images per such prefix
    example: str  # the one with most images
    pattern: str  # a folds.group_pattern that keys images by such a prefix


def leading_token(name: str) -> str:
    return NAME_SEPARATORS.split(name, maxsplit=1)[0]


def shared_name_prefixes(files: np.ndarray, labels: np.ndarray) -> SharedPrefixes | None:
    """File-name prefixes that look like subject ids, or None when the names show no such scheme.

    A prefix found in one class only names the class (happy_001.png), and one prefix on every image
    names the data set (FER-2013's Training_123.jpg): neither groups images, so neither counts.
    """
    names = pd.Series([file_name(f) for f in files])
    table = pd.DataFrame({"token": names.map(leading_token), "label": np.asarray(labels)})
    if table["token"].nunique() < 2:
        return None
    per_token = table.groupby("token")["label"].agg(images="size", classes="nunique")
    shared = per_token[per_token["classes"] >= 2]
    if shared["images"].sum() < SHARED_PREFIX_COVERAGE * len(table):
        return None
    mean_images = float(shared["images"].mean())
    if mean_images < SHARED_PREFIX_MEAN_IMAGES:
        return None
    example = str(shared["images"].idxmax())
    name = names[table["token"] == example].iloc[0]
    return SharedPrefixes(len(shared), mean_images, example, prefix_pattern(name, example))


def prefix_pattern(name: str, token: str) -> str:
    """A folds.group_pattern keying `name` by `token`, cut at the separator that follows it in `name`."""
    separator = name[len(token) : len(token) + 1]
    if not separator:
        return "^(.+)$"  # the name is the token: each name its own key
    escaped = re.escape(separator)  # '-' would make a range inside [...], '.' any character outside
    return f"^([^{escaped}]+){escaped}"
