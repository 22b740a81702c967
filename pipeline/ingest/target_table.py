"""The regression targets (data.targets: valence, arousal) of the train images, read from the download.

They are the columns of a CSV that names the train images: the label table itself in that layout,
or in any layout a CSV of an id column plus every target column (`train_affect.csv`: id,valence,arousal).
Its ids may spell an image as the prepared id, its path, its path inside its top folder, its file
name or its file stem (as a label table may, see pipeline/ingest/layouts.py); for a pixel table, the train
row number. Values lie in [-1, 1]; -2 or an empty cell marks a missing value (NaN once read), and
an image the CSV does not name has all its targets missing. A download without the columns has no
targets; one with only some of them is refused, so a typo never silently drops a target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from pipeline.evaluation.affect import MISSING_MARK, VALUE_RANGE
from pipeline.ingest.layouts import SPELLINGS
from pipeline.ingest.sources import CompetitionFiles, SourceError, find_sample
from pipeline.ingest.tables import column_named, read_table

Spelling = Callable[[str], str]


def read_targets(
    files: CompetitionFiles, train: pd.DataFrame, names: tuple[str, ...], sample_submission: str | None
) -> np.ndarray | None:
    """float32 len(train)×len(names), NaN where missing, in `train`'s row order; None when the download has none."""
    if not names:
        return None
    sample_name = find_sample(files, sample_submission)
    tables = [n for n in files.csvs() if n != sample_name]
    with_all = [n for n in tables if all(_header_has(files, n, name) for name in names)]
    if not with_all:
        _refuse_partial(files, tables, names)
        return None
    matches = [(name, *_match_train(files, name, train, names)) for name in with_all]
    found = [m for m in matches if m[1] > 0]
    if not found:
        raise SourceError(
            f"{files.where(with_all[0])}: holds the target columns {list(names)} but no column of it names the "
            f"train images (ids like {train['id'].iloc[:2].tolist()}, files like {train['file'].iloc[:2].tolist()}); "
            "spell them as the image ids, paths or file names, or set data.targets: [] to train without targets"
        )
    best = max(m[1] for m in found)
    tied = [m[0] for m in found if m[1] == best]
    if len(tied) > 1:
        raise SourceError(
            f"{files.where('')}: several CSVs {tied} hold the targets {list(names)} for the train images; "
            "keep one, or rename the columns of the other"
        )
    table_name, _, rows = next(m for m in found if m[1] == best)
    table = read_table(files, table_name)
    values = np.column_stack([_parse_column(files, table_name, table, name) for name in names])
    aligned = np.full((len(train), len(names)), np.nan, np.float32)
    named = rows >= 0
    aligned[named] = values[rows[named]]
    print(
        f"prepare: targets {list(names)} from {table_name} for {int(named.sum())} of {len(train)} train images, "
        f"{int(np.isnan(aligned).any(axis=1).sum())} with a missing value"
    )
    return aligned


def _header_has(files: CompetitionFiles, table_name: str, column: str) -> bool:
    return any(c.lower() == column.lower() for c in files.csv_columns(table_name))


def _refuse_partial(files: CompetitionFiles, tables: list[str], names: tuple[str, ...]) -> None:
    for table_name in tables:
        present = [name for name in names if _header_has(files, table_name, name)]
        if present:
            missing = [name for name in names if name not in present]
            raise SourceError(
                f"{files.where(table_name)}: has target column(s) {present} but not {missing} "
                f"(columns {files.csv_columns(table_name)}); set data.targets to {present} to train those, "
                "or [] to train without targets"
            )


def _train_spellings(train: pd.DataFrame) -> list[tuple[Spelling, dict[str, int]]]:
    """How a CSV may name each train row: (spelling applied to a CSV value, spelled key → row), the
    prepared id first; a spelling two rows share is left out, so no value names the wrong image."""
    spellings = [(str, {key: row for row, key in enumerate(train["id"])})]
    paths = [PurePosixPath(f) for f in train["file"]]
    for spelling in SPELLINGS:
        keys = {spelling(p): row for row, p in enumerate(paths)}
        if len(keys) == len(paths):
            spellings.append((lambda value, s=spelling: s(PurePosixPath(value)), keys))
    return spellings


def _match_train(
    files: CompetitionFiles, table_name: str, train: pd.DataFrame, names: tuple[str, ...]
) -> tuple[int, np.ndarray]:
    """(how many train rows the table names, for each train row the table row naming it or -1), by the
    column of unique values and the spelling that name the most train rows."""
    table = read_table(files, table_name)
    targets = {column_named(table, name) for name in names}
    columns = [c for c in table.columns if c not in targets and table[c].is_unique]
    best_count, best_rows = 0, np.full(len(train), -1)
    for spelling, row_of in _train_spellings(train):
        for column in columns:
            train_rows = np.array([row_of.get(spelling(value), -1) for value in table[column]])
            count = int((train_rows >= 0).sum())
            if count > best_count:
                best_count, best_rows = count, _invert(train_rows, len(train))
        if best_count == len(train):
            break  # every image named: the spellings after this cost time and can do no better
    return best_count, best_rows


def _invert(train_rows: np.ndarray, train_size: int) -> np.ndarray:
    """table row → train row, as train row → table row (-1 where no table row names it)."""
    rows = np.full(train_size, -1)
    named = np.flatnonzero(train_rows >= 0)
    rows[train_rows[named]] = named
    return rows


def _parse_column(files: CompetitionFiles, table_name: str, table: pd.DataFrame, name: str) -> np.ndarray:
    """One target column as float32: empty or -2 → NaN; text or values outside [-1, 1] refused by line."""
    column = column_named(table, name)
    text = table[column].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(np.float64)
    unreadable = np.isnan(values) & (text != "").to_numpy()
    missing = np.isnan(values) | (values == MISSING_MARK)
    outside = ~missing & ((values < VALUE_RANGE[0]) | (values > VALUE_RANGE[1]))
    for bad, what in (
        (unreadable, "is not a number"),
        (outside, f"is outside [{VALUE_RANGE[0]:g}, {VALUE_RANGE[1]:g}]"),
    ):
        if bad.any():
            row = int(bad.argmax())
            raise SourceError(
                f"{files.where(table_name)}: line {row + 2}: {column} {text.iloc[row]!r} {what} "
                f"({int(bad.sum())} such rows); write values in [{VALUE_RANGE[0]:g}, {VALUE_RANGE[1]:g}], "
                f"{MISSING_MARK:g} or an empty cell for a missing one"
            )
    return np.where(missing, np.nan, values).astype(np.float32)
