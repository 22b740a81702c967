"""The pixel-table layout: images as rows of space-separated gray values, as FER-2013 ships them.

Either one table with a usage column (fer2013.csv / icml_face_data.csv: emotion, pixels, Usage;
rows marked Training train, the rest are the test set), or separate tables: a labelled train table
(train.csv: emotion, pixels) and an unlabelled test table (test.csv: pixels, maybe id). Test ids
are the test table's id column, or else row numbers, counted from 0 over its file's data rows
(FER-2013's first test row is 28709). Without a sample submission, one is written: id and the
train table's label column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.ingest.sample import parse_sample
from pipeline.ingest.sources import CompetitionFiles, SourceError
from pipeline.ingest.tables import Competition, column_named, find_label_column, read_table, refuse_empty_labels

PIXELS_COLUMN = "pixels"
USAGE_COLUMNS = ("usage", "split")  # the column that splits one table into train and test rows
TRAIN_USAGES = ("training", "train")  # its value on train rows (FER-2013: Training, PublicTest, PrivateTest)
ID_COLUMN = "id"  # a test table's own ids; without it, test ids are row numbers


def is_pixel_table(files: CompetitionFiles, name: str) -> bool:
    return any(column.lower() == PIXELS_COLUMN for column in files.csv_columns(name))


def _usage_column(columns: list[str]) -> str | None:
    return next((c for c in columns if c.lower() in USAGE_COLUMNS), None)


def _is_labelled(columns: list[str]) -> bool:
    """A table with a column besides pixels, usage and id: a label column."""
    return any(c.lower() not in (PIXELS_COLUMN, ID_COLUMN, *USAGE_COLUMNS) for c in columns)


def read_pixel_table(
    files: CompetitionFiles,
    tables: list[str],
    train_table: str | None,
    label_column: str | None,
    sample_name: str | None,
) -> Competition:
    pixel_tables = [name for name in tables if is_pixel_table(files, name)]
    name = train_table or _pick_train_table(files, pixel_tables)
    table = read_table(files, name)
    pixels = column_named(table, PIXELS_COLUMN)
    if pixels is None:
        raise SourceError(
            f"{files.where(name)}: no {PIXELS_COLUMN} column (columns {list(table.columns)}); "
            "a pixel table holds each image as space-separated gray values in a `pixels` column"
        )
    usage = _usage_column(list(table.columns))
    labels = find_label_column(files, table, name, label_column, {pixels, *([usage] if usage else [])})
    if usage:
        train_rows, test_rows, test_name = _split_by_usage(files, table, name, usage)
    else:
        test_name = _pick_test_table(files, [t for t in pixel_tables if t != name], name)
        train_rows, test_rows = table, read_table(files, test_name)
    test_pixels, test_id = column_named(test_rows, PIXELS_COLUMN), column_named(test_rows, ID_COLUMN)
    if test_pixels is None:
        raise SourceError(f"{files.where(test_name)}: no {PIXELS_COLUMN} column (columns {list(test_rows.columns)})")
    refuse_empty_labels(files, train_rows, name, labels)
    train = pd.DataFrame(
        {
            "id": [str(i) for i in train_rows.index],
            "label": train_rows[labels].str.strip().to_numpy(),
            "file": [f"{name}:{i}" for i in train_rows.index],
            "pixels": train_rows[pixels].to_numpy(),
        }
    )
    test_all = pd.DataFrame(
        {
            "id": list(test_rows[test_id] if test_id else test_rows.index.astype(str)),
            "file": [f"{test_name}:{i}" for i in test_rows.index],
            "pixels": test_rows[test_pixels].to_numpy(),
        }
    )
    sample = files.read(sample_name) if sample_name else _written_sample(test_all["id"], labels, train["label"].iloc[0])
    where = files.where(sample_name) if sample_name else "the written sample"
    rows = parse_sample(sample, where)
    return Competition("pixel_table", train, _in_sample_order(test_all, rows, where, test_name), sample, rows)


def _split_by_usage(
    files: CompetitionFiles, table: pd.DataFrame, name: str, usage: str
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    is_train = table[usage].str.strip().str.lower().isin(TRAIN_USAGES)
    if not is_train.any() or is_train.all():
        values = sorted(set(table[usage].str.strip()))[:6]
        raise SourceError(
            f"{files.where(name)}: its {usage} column ({values}) marks {'every' if is_train.all() else 'no'} row "
            f"as train ({'/'.join(TRAIN_USAGES)}); one table with a usage column holds both the train and the "
            "test rows, so fix the column, or point data.train_table at a table of train rows only"
        )
    return table[is_train], table[~is_train], name


def _pick_train_table(files: CompetitionFiles, pixel_tables: list[str]) -> str:
    """The labelled pixel table; with both a usage table and a separate train/test pair, the pair (the sample matches
    it)."""
    labelled = [t for t in pixel_tables if _is_labelled(files.csv_columns(t))]
    if len(labelled) > 1:
        without_usage = [t for t in labelled if _usage_column(files.csv_columns(t)) is None]
        has_test_table = len(labelled) < len(pixel_tables)
        labelled = without_usage if has_test_table and len(without_usage) == 1 else labelled
    if len(labelled) != 1:
        raise SourceError(
            f"{files.where('')}: {'several' if labelled else 'no'} labelled pixel tables {labelled or pixel_tables}; "
            "set data.train_table to the one to train on"
        )
    return labelled[0]


def _pick_test_table(files: CompetitionFiles, others: list[str], train_name: str) -> str:
    unlabelled = [t for t in others if not _is_labelled(files.csv_columns(t))]
    if len(unlabelled) != 1:
        found = (
            f"several test tables (pixels, no labels) beside it: {unlabelled}"
            if unlabelled
            else "no test table (pixels, no labels) beside it"
        )
        raise SourceError(
            f"{files.where(train_name)}: has no usage column, and there is {found}; ship one test table, "
            f"or point data.train_table at a table with a {'/'.join(USAGE_COLUMNS)} column"
        )
    return unlabelled[0]


def _written_sample(test_ids: pd.Series, label_column: str, any_label: str) -> bytes:
    return pd.DataFrame({"id": test_ids, label_column: any_label}).to_csv(index=False).encode()


def _in_sample_order(test: pd.DataFrame, sample: pd.DataFrame, where: str, test_name: str) -> pd.DataFrame:
    ids = sample.iloc[:, 0]
    unknown = ~ids.isin(test["id"])
    if unknown.any():
        raise SourceError(
            f"{where}: id {ids[unknown].iloc[0]!r} is not a test row of {test_name} ({int(unknown.sum())} such; "
            f"its test rows are {test['id'].iloc[:2].tolist()}, ...: the values of its {ID_COLUMN} column, or "
            "without one the row numbers, counted from 0 over the file's data rows)"
        )
    if len(ids) != len(test):
        raise SourceError(
            f"{where}: lists {len(ids)} ids but {test_name} holds {len(test)} test rows; the sample and the test "
            "rows must list the same images"
        )
    return test.set_index("id").loc[ids].reset_index()


def parse_pixels(text: str, where: str) -> np.ndarray:
    """One row's pixel string → uint8 array side×side (gray) or side×side×3 (RGB)."""
    # numpy's C text parser: 5× faster than splitting in Python, and it refuses what is not a number.
    values = np.fromstring(text, dtype=np.int64, sep=" ") if text.strip() else np.empty(0, np.int64)
    side, channels = _square_side(len(values))
    if side == 0:
        raise SourceError(
            f"{where}: {len(values)} pixel values make no square image (48×48 gray is 2304); fix or remove the row"
        )
    if values.min() < 0 or values.max() > 255:
        raise SourceError(f"{where}: pixel values must be 0–255, found {values.min()}–{values.max()}")
    return values.astype(np.uint8).reshape((side, side) + ((3,) if channels == 3 else ()))


def _square_side(count: int) -> tuple[int, int]:
    for channels in (1, 3):
        side = math.isqrt(count // channels)
        if count and count % channels == 0 and side * side * channels == count:
            return side, channels
    return 0, 0
