"""Two finished runs of one competition compared on the labelled holdout they share: an A/B of two recipes.

    python benchmarks/compare_runs.py /path/to/run-a /path/to/run-b --names "two members" "distilled"
    python benchmarks/compare_runs.py run-a run-b --out benchmarks/results/fer2013-cpu-equal-time

Each run is a workspace where `dvc repro` reached `ensemble` with the same `data.holdout_fraction` and
`folds.seed`, so both hold out the same images (checked). Printed: each run's submission on the holdout
(ensemble/holdout.csv, fold-averaged as submitted), the paired difference with a bootstrap 95% interval
over the holdout images and McNemar's exact test on the images exactly one of them gets right, and each
run's time curve (benchmarks/member_subsets.py: every subset of its members, with minutes and holdout).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from member_subsets import subset_rows, subsets_markdown  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data import load_prepared  # noqa: E402
from pipeline.evaluation.bootstrap import bootstrap_interval  # noqa: E402
from pipeline.evaluation.predictions import HOLDOUT_FILE  # noqa: E402
from pipeline.files import write_json, write_text  # noqa: E402


def submitted_holdout(workspace: Path) -> pd.DataFrame:
    """The submission's holdout rows (id, label, pred), in id order."""
    path = workspace / "ensemble" / HOLDOUT_FILE
    table = pd.read_csv(path, usecols=["id", "label", "pred"], dtype=str)
    if table.empty:
        sys.exit(f"{path} has no rows: run both projects with data.holdout_fraction above 0")
    return table.sort_values("id", ignore_index=True)


def accuracy_gain(right_a: np.ndarray, right_b: np.ndarray) -> float:
    return float(right_b.mean() - right_a.mean())


def paired_difference(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """Accuracy of b minus a on the same images: its bootstrap interval and McNemar's exact p-value."""
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    low, high = bootstrap_interval(accuracy_gain, right_a, right_b)
    return {
        "difference": accuracy_gain(right_a, right_b),
        "ci_low": low,
        "ci_high": high,
        "only_a_right": only_a,
        "only_b_right": only_b,
        "mcnemar_p": binomtest(only_b, only_a + only_b).pvalue if only_a + only_b else 1.0,
    }


def comparison(workspaces: list[Path], names: list[str]) -> dict:
    a, b = (submitted_holdout(workspace) for workspace in workspaces)
    if not (a["id"].equals(b["id"]) and a["label"].equals(b["label"])):
        sys.exit("the two runs hold out different images: give them the same data.holdout_fraction and folds.seed")
    right = [(table["pred"] == table["label"]).to_numpy() for table in (a, b)]
    runs = []
    for workspace, name, correct in zip(workspaces, names, right):
        config = load_config(workspace / "params.yaml")
        rows = subset_rows(workspace, config, load_prepared(workspace / "data" / "prepared"))
        runs.append({"name": name, "workspace": str(workspace), "holdout_acc": float(correct.mean()), "subsets": rows})
    return {"images": len(a), "runs": runs, "b_minus_a": paired_difference(*right)}


def comparison_markdown(figures: dict) -> str:
    a, b = figures["runs"]
    paired = figures["b_minus_a"]
    lines = [
        f"Submissions on the {figures['images']} holdout images (fold-averaged, as submitted):",
        "",
        "| run | holdout accuracy |",
        "|---|---|",
        *(f"| {run['name']} | {run['holdout_acc']:.4f} |" for run in figures["runs"]),
        "",
        f"{b['name']} minus {a['name']}: {100 * paired['difference']:+.2f} points (bootstrap 95% interval "
        f"{100 * paired['ci_low']:+.2f} to {100 * paired['ci_high']:+.2f}); {paired['only_b_right']} images right "
        f"only in {b['name']}, {paired['only_a_right']} only in {a['name']}: McNemar p = {paired['mcnemar_p']:.3f}.",
    ]
    for run in figures["runs"]:
        lines += [
            "",
            f"Time curve of {run['name']} (every subset of its members):",
            "",
            subsets_markdown(run["subsets"]),
        ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspaces", type=Path, nargs=2, help="the two projects, a then b")
    parser.add_argument("--names", nargs=2, default=["a", "b"], help="what to call them in the tables")
    parser.add_argument("--out", type=Path, help="also write the figures to this stem (.md, .json)")
    args = parser.parse_args()
    figures = comparison(args.workspaces, args.names)
    text = comparison_markdown(figures)
    print(text)
    if args.out:
        write_json(figures, args.out.with_suffix(".json"))
        write_text(text, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
