"""The competition's submission format: a CSV shaped exactly like its sample_submission.csv.

Used by the `submission` stage to write files and by the `submit` command to check one before it
is uploaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import BINARY_FORM, LABEL_FORM, split_labels, submission_form
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import decisions

# Probabilities to 7 significant digits: log-loss moves by about 1e-7, and the file is half the size of
# full precision (Kaggle clips at 1e-15 and rescales each row to sum to one, as metrics.log_loss does).
PROBABILITY_FORMAT = "%.7g"


class SubmissionError(PipelineError):
    """A submission that Kaggle would reject or mis-score."""


def read_sample(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def validate_submission(
    submission: pd.DataFrame,
    sample: pd.DataFrame,
    labels: list[str],
    name: str = "submission",
    multi_label: bool = False,
) -> None:
    """What Kaggle checks before it scores: the sample's header, its ids in its order, no empty cell, and a label
    the competition knows (label form; multi-label: each label a cell lists) or a probability in [0, 1]
    (probability form, or a multi-label competition's 0/1 columns). `labels`: each class as the competition
    spells it (prepared submission_labels.json)."""
    if list(submission.columns) != list(sample.columns):
        raise SubmissionError(
            f"{name}: header {list(submission.columns)} differs from sample_submission.csv's {list(sample.columns)}"
        )
    if len(submission) != len(sample):
        raise SubmissionError(f"{name}: {len(submission)} rows, sample_submission.csv has {len(sample)}")
    text = submission.astype(str).apply(lambda column: column.str.strip())
    empty = submission.isna() | (text == "")
    if empty.to_numpy().any():
        row = int(np.flatnonzero(empty.to_numpy().any(axis=1))[0])
        raise SubmissionError(f"{name}: empty or NaN cell in row {row + 2}")
    id_column = sample.columns[0]
    ids, expected = text[id_column].to_numpy(), sample[id_column].to_numpy()
    if not np.array_equal(ids, expected):
        row = int(np.flatnonzero(ids != expected)[0])
        raise SubmissionError(
            f"{name}: row {row + 2} has id {ids[row]!r} where sample_submission.csv has {expected[row]!r}; keep its "
            "ids and order"
        )
    form = submission_form(sample)
    if form == LABEL_FORM:
        cells = text[sample.columns[1]]
        written = {name for cell in cells for name in split_labels(cell)} if multi_label else set(cells)
        unknown = sorted(written - set(labels))
        if unknown:
            raise SubmissionError(f"{name}: label(s) {unknown[:5]} are not among the competition's labels {labels}")
        return
    values = text[sample.columns[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    outside = ~np.isfinite(values) | (values < 0) | (values > 1)
    if outside.any():
        row, column = (int(i[0]) for i in np.nonzero(outside))
        raise SubmissionError(
            f"{name}: row {row + 2}, column {sample.columns[1 + column]!r} holds "
            f"{text.iloc[row, 1 + column]!r}; a probability column takes numbers from 0 to 1"
        )


def make_submission(
    probs: np.ndarray,
    test_ids: np.ndarray,
    sample: pd.DataFrame,
    labels: list[str],
    name: str,
    multi_label: bool = False,
    decided: bool = False,
) -> pd.DataFrame:
    """One row per test id: the most probable class as the competition spells it (label form), each class's
    probability in the sample's columns (probability form), or the second class's probability (binary form).
    Multi-label: the decided classes (metrics.decisions) separated by spaces (label form), or in the columns each
    class's probability, or where the metric scores decisions (`decided`) 1 for a decided class and 0 otherwise."""
    id_column = sample.columns[0]
    form = submission_form(sample)
    if multi_label and form == LABEL_FORM:
        names = np.array(labels)
        cells = [" ".join(names[row > 0]) for row in decisions(probs)]
        submission = pd.DataFrame({id_column: test_ids, sample.columns[1]: cells})
    elif form == LABEL_FORM:
        submission = pd.DataFrame({id_column: test_ids, sample.columns[1]: np.array(labels)[probs.argmax(axis=1)]})
    elif form == BINARY_FORM:
        submission = pd.DataFrame({id_column: test_ids, sample.columns[1]: probs[:, 1]})
    else:
        column_of = {label: i for i, label in enumerate(labels)}
        values = decisions(probs) if multi_label and decided else probs
        columns = {column: values[:, column_of[column.strip()]] for column in sample.columns[1:]}
        submission = pd.DataFrame({id_column: test_ids, **columns})
    validate_submission(submission, sample, labels, name, multi_label)
    return submission


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format=PROBABILITY_FORMAT)
    return buffer.getvalue().encode()
