"""The competition's submission format: a CSV shaped exactly like its sample_submission.csv.

Used by the `submission` stage to write files and by the `submit` command to check one before it
is uploaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError


class SubmissionError(PipelineError):
    """A submission that Kaggle would reject or mis-score."""


def read_sample(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def validate_submission(
    submission: pd.DataFrame, sample: pd.DataFrame, labels: list[str], name: str = "submission"
) -> None:
    """`labels`: each class as the competition spells it (prepared submission_labels.json)."""
    if list(submission.columns) != list(sample.columns):
        raise SubmissionError(
            f"{name}: header {list(submission.columns)} differs from sample_submission.csv's {list(sample.columns)}"
        )
    if len(submission) != len(sample):
        raise SubmissionError(f"{name}: {len(submission)} rows, sample_submission.csv has {len(sample)}")
    empty = submission.isna() | (submission.astype(str).apply(lambda column: column.str.strip()) == "")
    if empty.to_numpy().any():
        row = int(np.flatnonzero(empty.to_numpy().any(axis=1))[0])
        raise SubmissionError(f"{name}: empty or NaN cell in row {row + 2}")
    id_column, label_column = sample.columns
    ids, expected = submission[id_column].astype(str).to_numpy(), sample[id_column].to_numpy()
    if not np.array_equal(ids, expected):
        row = int(np.flatnonzero(ids != expected)[0])
        raise SubmissionError(
            f"{name}: row {row + 2} has id {ids[row]!r} where sample_submission.csv has {expected[row]!r}; keep its "
            "ids and order"
        )
    unknown = sorted(set(submission[label_column].astype(str)) - set(labels))
    if unknown:
        raise SubmissionError(f"{name}: label(s) {unknown[:5]} are not among the competition's labels {labels}")


def make_submission(
    probs: np.ndarray, test_ids: np.ndarray, sample: pd.DataFrame, labels: list[str], name: str
) -> pd.DataFrame:
    """One row per test id, labelled with the most probable class as the competition spells it."""
    id_column, label_column = sample.columns
    submission = pd.DataFrame({id_column: test_ids, label_column: np.array(labels)[probs.argmax(axis=1)]})
    validate_submission(submission, sample, labels, name)
    return submission


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()
