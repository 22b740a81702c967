"""Cross-fitted OOF accuracy of the blend of every subset of a run's backbones, beside the minutes they trained,
and, where the run has a labelled holdout (data.holdout_fraction), the subset's accuracy there as it would be
submitted: each member's fold models averaged, blended by the weights fitted on all of OOF.

    python benchmarks/member_subsets.py                      # in a workspace where `dvc repro` has run
    python benchmarks/member_subsets.py --out benchmarks/results/fer2013-cpu-subsets

One run of several members under a time budget is then a time-budget accuracy curve: one member is
its budget's point, two blended are twice the budget, and so on. Each subset is blended as the
`ensemble` stage blends (greedy weights fitted on the other folds), without its fall-back to the best
single member, so a blend that does not pay shows as a loss.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data import Prepared, load_prepared  # noqa: E402
from pipeline.evaluation.blend import blend, cross_fitted_blend, greedy_weights  # noqa: E402
from pipeline.evaluation.predictions import HOLDOUT_SUFFIX, read_fold_test_tables, read_oof_table  # noqa: E402
from pipeline.files import read_json, write_json, write_text  # noqa: E402


def training_minutes(workspace: Path, backbone: str, fold_ids: tuple[int, ...]) -> float:
    return (
        sum(read_json(workspace / "models" / backbone / f"fold{fold}" / "run.json")["seconds"] for fold in fold_ids)
        / 60
    )


def holdout_probabilities(workspace: Path, name: str, config: Config, data: Prepared) -> np.ndarray:
    """The member's fold models' holdout probabilities averaged: what its test predictions are."""
    path = workspace / "test_predictions" / f"{name}{HOLDOUT_SUFFIX}"
    return np.mean(read_fold_test_tables(path, data.classes, data.holdout_ids, config.folds.ids), axis=0)


def holdout_accuracy(
    members: tuple[str, ...], oof: dict, labels: np.ndarray, holdout: dict, data: Prepared, max_steps: int
) -> float:
    weights = greedy_weights([oof[name] for name in members], labels, max_steps)
    blended = blend([holdout[name] for name in members], weights)
    return float((blended.argmax(1) == data.holdout_labels).mean())


def subset_rows(workspace: Path, config: Config, data: Prepared) -> list[dict]:
    """One row per non-empty subset of the members (backbones and students), smallest subsets first."""
    names = config.members
    tables = {
        name: read_oof_table(workspace / "oof" / f"{name}.csv", data.classes, data.train_ids, data.multi_label)
        for name in names
    }
    _, labels, folds = tables[names[0]]
    accuracy = {name: float((tables[name][0].argmax(1) == labels).mean()) for name in names}
    minutes = {name: training_minutes(workspace, name, config.folds.ids) for name in names}
    oof = {name: tables[name][0] for name in names}
    holdout = {name: holdout_probabilities(workspace, name, config, data) for name in names} if data.has_holdout else {}
    rows = []
    for size in range(1, len(names) + 1):
        for members in itertools.combinations(names, size):
            blended = cross_fitted_blend(
                [tables[name][0] for name in members], labels, folds, config.ensemble.max_steps
            )
            best = max(members, key=accuracy.get)
            row = {
                "members": list(members),
                "train_minutes": sum(minutes[name] for name in members),
                "oof_acc": float((blended.argmax(1) == labels).mean()),
                "best_member": best,
                "best_member_acc": accuracy[best],
            }
            if holdout:
                row["holdout_acc"] = holdout_accuracy(members, oof, labels, holdout, data, config.ensemble.max_steps)
            rows.append(row)
    return rows


def subsets_markdown(rows: list[dict]) -> str:
    with_holdout = "holdout_acc" in rows[0]
    lines = [
        "| members | train min | blend OOF | best member | gain |"
        + (" holdout, as submitted |" if with_holdout else ""),
        "|---|---|---|---|---|" + ("---|" if with_holdout else ""),
    ]
    lines += [
        f"| {' + '.join(row['members'])} | {row['train_minutes']:.1f} | {row['oof_acc']:.4f} | "
        f"{row['best_member']} {row['best_member_acc']:.4f} | {100 * (row['oof_acc'] - row['best_member_acc']):+.2f} |"
        + (f" {row['holdout_acc']:.4f} |" if with_holdout else "")
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workspace", type=Path, default=ROOT, help="project folder holding params.yaml, oof/ and models/"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this stem (.md, .json)")
    args = parser.parse_args()
    config = load_config(args.workspace / "params.yaml")
    rows = subset_rows(args.workspace, config, load_prepared(args.workspace / "data" / "prepared"))
    table = subsets_markdown(rows)
    print(table)
    if args.out:
        write_json({"subsets": rows}, args.out.with_suffix(".json"))
        write_text(table, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
