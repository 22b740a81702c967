"""CSV tables inside a competition: reading them as text, and finding their label column."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.ingest.sources import CompetitionFiles, SourceError

# Column names competitions give their labels, matched case-insensitively when data.label_column is unset.
LABEL_COLUMNS = ("label", "labels", "class", "target", "emotion", "expression", "category", "y")


@dataclass(frozen=True)
class Competition:
    """What a layout reader found: the rows to decode and the sample submission to keep."""

    layout: str
    train: pd.DataFrame  # id, label (as written), file; and pixels for a pixel table
    test: pd.DataFrame  # id, file (and pixels), in the sample submission's order
    sample_submission: bytes  # the competition's own, or one written for a pixel table that ships none
    sample: pd.DataFrame  # those bytes parsed: the id column, then a label or a probability column per class


def read_table(files: CompetitionFiles, name: str) -> pd.DataFrame:
    """A CSV with every cell as text (label codes stay as written, `007` stays `007`); header names stripped."""
    if not files.has(name):
        raise SourceError(f"{files.where(name)}: no such file; {files.inventory()}")
    try:
        with files.open_text(name) as handle:
            table = pd.read_csv(handle, dtype=str, keep_default_na=False, skipinitialspace=True)
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{files.where(name)}: not UTF-8 text ({error}); save it as UTF-8 (e.g. from a spreadsheet: CSV UTF-8)"
        ) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise SourceError(f"{files.where(name)}: not a readable CSV table ({error}); download it again") from error
    table.columns = [str(column).strip() for column in table.columns]
    return table


def column_named(table: pd.DataFrame, wanted: str) -> str | None:
    """The column called `wanted`, ignoring case."""
    return next((c for c in table.columns if c.lower() == wanted.lower()), None)


def find_label_column(
    files: CompetitionFiles, table: pd.DataFrame, name: str, named: str | None, others: set[str]
) -> str:
    """`named` (data.label_column), else the one column besides `others`, else the one with a usual label name."""
    if named is not None:
        if named not in table.columns:
            raise SourceError(
                f"{files.where(name)}: data.label_column {named!r} is not one of its columns {list(table.columns)}"
            )
        return named
    rest = [c for c in table.columns if c not in others]
    if len(rest) == 1:
        return rest[0]
    usual = [c for c in rest if c.lower() in LABEL_COLUMNS]
    if len(usual) == 1:
        return usual[0]
    raise SourceError(
        f"{files.where(name)}: cannot tell which column holds the labels (columns {list(table.columns)}); "
        "set data.label_column"
    )


def refuse_empty_labels(files: CompetitionFiles, table: pd.DataFrame, name: str, label_column: str) -> None:
    empty = table[label_column].str.strip() == ""
    if empty.any():
        row = int(empty.to_numpy().argmax())
        raise SourceError(
            f"{files.where(name)}: line {row + 2} has no {label_column} ({int(empty.sum())} such rows); "
            "fill them in or remove those rows"
        )
