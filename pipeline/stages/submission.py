"""Stage `submission`: submissions/<backbone>.csv and submissions/ensemble.csv.

Each file has exactly the shape of the competition's sample_submission.csv (same header, same ids
in the same order, labels from the class names) and is checked against it before it is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.evaluation.metrics import competition_metric
from pipeline.evaluation.predictions import read_test_table
from pipeline.evaluation.submission_format import make_submission, read_sample, to_csv_bytes
from pipeline.files import atomic_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline submission", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--test", type=Path, required=True, help="folder of the backbones' test probabilities (test_predictions/)"
    )
    parser.add_argument("--ensemble", type=Path, required=True, help="folder with the ensemble's test.csv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    sample = read_sample(args.data / "sample_submission.csv")
    metric = competition_metric(config.competition.metric, data.submission_form, data.multi_label)
    decided = data.multi_label and metric.reads == "labels"  # multi-label columns then hold 0/1 decisions
    probs = {name: read_test_table(args.test / f"{name}.csv", data.classes, data.test_ids) for name in config.members}
    probs["ensemble"] = read_test_table(args.ensemble / "test.csv", data.classes, data.test_ids)
    with atomic_dir(args.out) as tmp:
        for name, p in probs.items():
            (tmp / f"{name}.csv").write_bytes(
                to_csv_bytes(
                    make_submission(
                        p, data.test_ids, sample, data.submission_labels, f"{name}.csv", data.multi_label, decided
                    )
                )
            )
    print(
        f"submission: wrote {', '.join(f'{n}.csv' for n in probs)} ({len(sample)} rows each, validated against "
        f"sample_submission.csv) → {args.out}"
    )
