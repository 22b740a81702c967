"""Probability tables: the train runs' fold outputs, gathered per backbone, and the tables later stages read.

`oof@<backbone>` is the one stage that gathers a backbone's fold outputs (load_plain_oof); the
ensemble, submission, bundle and report stages read the tables it writes (read_oof_table,
read_test_table; the report also the per-fold test tables, read_fold_test_tables).
When the data has regression targets (valence, arousal), every table also holds one column of
predicted values per target, after the probabilities (read_target_values); columns are read by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import label_cells, parse_labels
from pipeline.errors import MissingInputError, PipelineError

HOLDOUT_SUFFIX = ".holdout.csv"  # test_predictions/<member>.holdout.csv: each fold model's holdout probabilities
HOLDOUT_FILE = "holdout.csv"  # ensemble/holdout.csv: the submission's holdout probabilities
AVERAGED = -1  # the fold column of rows that average every fold model


@dataclass(frozen=True)
class PlainOof:
    """A backbone's fold models' plain-view predictions of their validation folds, in the prepared train order."""

    ids: np.ndarray
    folds: np.ndarray
    labels: np.ndarray  # int class indices; multi-label: N×classes of 0/1
    probs: np.ndarray  # N×classes
    values: np.ndarray  # N×targets (N×0 without targets)


def fold_dir(models_dir: str | Path, backbone: str, fold: int) -> Path:
    return Path(models_dir) / backbone / f"fold{fold}"


def load_plain_oof(
    models_dir: str | Path,
    backbone: str,
    fold_ids: tuple[int, ...],
    classes: list[str],
    train_ids: np.ndarray,
    target_names: list[str] = (),
    multi_label: bool = False,
) -> PlainOof:
    dirs = [fold_dir(models_dir, backbone, fold) for fold in fold_ids]
    missing = [str(d) for d in dirs if not (d / "run.json").exists()]
    if missing:
        raise MissingInputError(f"missing train outputs {missing}; run `dvc repro train` first")
    plain = _concat_in_order([d / "oof_plain.csv" for d in dirs], train_ids)
    return PlainOof(
        ids=plain["id"].to_numpy(),
        folds=plain["fold"].to_numpy(),
        labels=parse_labels(plain["label"], classes, multi_label),
        probs=plain[classes].to_numpy(np.float64),
        values=plain[list(target_names)].to_numpy(np.float64),
    )


def _concat_in_order(paths: list[Path], train_ids: np.ndarray) -> pd.DataFrame:
    table = pd.concat(
        [pd.read_csv(p, dtype={"id": str, "label": str}, keep_default_na=False) for p in paths], ignore_index=True
    )
    if len(table) != len(train_ids) or set(table["id"]) != set(train_ids):
        raise PipelineError(
            f"{paths[0].parent.parent}: the folds' predictions do not cover the train set once each; re-run its train "
            "stages"
        )
    return table.set_index("id").loc[train_ids].reset_index()


def oof_table(
    ids: np.ndarray, folds: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """The documented OOF schema: id, fold, label, pred, then one probability column per class (multi-label: label
    and pred list classes separated by spaces, pred those at 0.5 or above)."""
    predicted = (probs >= 0.5).astype(np.float32) if labels.ndim == 2 else probs.argmax(axis=1)
    table = pd.DataFrame(
        {"id": ids, "fold": folds, "label": label_cells(labels, classes), "pred": label_cells(predicted, classes)}
    )
    return pd.concat([table, pd.DataFrame(probs, columns=classes)], axis=1)


def holdout_table(
    ids: np.ndarray | None, labels: np.ndarray | None, classes: list[str], by_fold: dict[int, np.ndarray]
) -> pd.DataFrame:
    """Holdout probabilities in the OOF schema, one block of rows per fold model (AVERAGED: all of them
    averaged, as submitted); no rows when `by_fold` is empty (no holdout)."""
    if not by_fold:
        return pd.DataFrame(columns=["id", "fold", "label", "pred", *classes])
    return pd.concat(
        [oof_table(ids, np.full(len(ids), fold), labels, probs, classes) for fold, probs in by_fold.items()],
        ignore_index=True,
    )


def probability_table(ids: np.ndarray, probs: np.ndarray, classes: list[str], **columns: np.ndarray) -> pd.DataFrame:
    """id, the given columns, then one probability column per class."""
    table = pd.DataFrame({"id": ids, **columns})
    return pd.concat([table, pd.DataFrame(probs, columns=classes)], axis=1)


def with_targets(table: pd.DataFrame, values: np.ndarray | None, target_names: list[str]) -> pd.DataFrame:
    """`table` with one column of predicted values per target appended (unchanged without targets)."""
    if not target_names:
        return table
    return pd.concat([table, pd.DataFrame(values, columns=list(target_names))], axis=1)


def read_target_values(path: Path, target_names: list[str], ids: np.ndarray) -> np.ndarray:
    """Predicted target values (N×targets) of a table written by `oof` or `ensemble`, in the order of `ids`."""
    table = _read_probabilities(path, list(target_names), ids)
    return table[list(target_names)].to_numpy(np.float64)


def read_oof_table(
    path: Path, classes: list[str], train_ids: np.ndarray, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, labels as data.py's parse_labels reads them, folds) of an OOF table, in the train order."""
    table = _read_probabilities(path, classes, train_ids)
    labels = parse_labels(table["label"], classes, multi_label)
    return table[classes].to_numpy(np.float64), labels, table["fold"].to_numpy()


def read_test_table(path: Path, classes: list[str], test_ids: np.ndarray) -> np.ndarray:
    """Test probabilities of a table written by `oof` or `ensemble`, in the prepared test order."""
    return _read_probabilities(path, classes, test_ids)[classes].to_numpy(np.float64)


def read_fold_test_tables(
    path: Path, classes: list[str], test_ids: np.ndarray, fold_ids: tuple[int, ...]
) -> list[np.ndarray]:
    """Per fold model, its probabilities from a `<backbone>.folds.csv` table (test images) or `.holdout.csv` table
    (holdout images), in the order of `test_ids`."""
    if not Path(path).is_file():
        raise MissingInputError(f"{path} is missing; `oof@<backbone>` writes it: run `dvc repro oof`")
    table = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    return [
        _in_order(table[table["fold"] == fold], path, classes, test_ids)[classes].to_numpy(np.float64)
        for fold in fold_ids
    ]


def _read_probabilities(path: Path, classes: list[str], ids: np.ndarray) -> pd.DataFrame:
    if not Path(path).is_file():
        raise MissingInputError(f"{path} is missing; the `oof` and `ensemble` stages write it: run `dvc repro`")
    return _in_order(pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False), path, classes, ids)


def _in_order(table: pd.DataFrame, path: Path, classes: list[str], ids: np.ndarray) -> pd.DataFrame:
    if len(table) != len(ids) or set(table["id"]) != set(ids) or not set(classes) <= set(table.columns):
        raise PipelineError(
            f"{path} does not match the prepared data (ids, class or target columns differ); re-run `dvc repro`"
        )
    return table.set_index("id").loc[ids].reset_index()
