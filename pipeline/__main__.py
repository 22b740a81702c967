"""`python -m pipeline <stage> [options]`: run one pipeline stage (as dvc.yaml does), `submit` or `preset`."""

from __future__ import annotations

import importlib
import logging
import sys

STAGES = {
    "download": "pipeline.download",
    "synthesize": "pipeline.synthetic",
    "prepare": "pipeline.prepare",
    "folds": "pipeline.folds",
    "tune": "pipeline.tune",
    "train": "pipeline.train",
    "oof": "pipeline.oof",
    "ensemble": "pipeline.ensemble",
    "submission": "pipeline.submission",
    "report": "pipeline.report",
    "submit": "pipeline.submit",  # by hand, not in dvc.yaml: it spends a Kaggle submission
    "preset": "pipeline.preset",  # writes a presets/*.yaml into params.yaml
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m pipeline {{{','.join(STAGES)}}} [options]  (add -h after a stage for its options)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from pipeline.config import PipelineError

    try:
        importlib.import_module(STAGES[argv[0]]).main(argv[1:])
    except (PipelineError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
