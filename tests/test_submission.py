import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.submission_format import SubmissionError, make_submission, validate_submission

CLASSES = ["angry", "happy", "sad"]
SAMPLE = pd.DataFrame({"id": ["003", "001", "002"], "label": ["sad"] * 3})


def test_submission_follows_sample_order_and_class_names():
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    sub = make_submission(probs, np.array(["003", "001", "002"]), SAMPLE, CLASSES, "x")
    assert list(sub["id"]) == ["003", "001", "002"] and list(sub["label"]) == ["happy", "angry", "sad"]


@pytest.mark.parametrize(
    "broken, message",
    [
        (SAMPLE.rename(columns={"label": "emotion"}), "header"),
        (SAMPLE.iloc[:2], "2 rows"),
        (SAMPLE.iloc[[1, 0, 2]], "row 2 has id '001'"),
        (SAMPLE.assign(label=["sad", "contempt", "sad"]), "contempt"),
        (SAMPLE.assign(label=["sad", None, "sad"]), "empty or NaN cell in row 3"),
        (SAMPLE.assign(label=["sad", " ", "sad"]), "empty or NaN"),
    ],
)
def test_broken_submissions_are_refused(broken, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(broken.reset_index(drop=True), SAMPLE, CLASSES)
