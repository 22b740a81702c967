"""Stage `ensemble`: blend weights over the backbones, fitted on OOF probabilities only.

Greedy forward selection with replacement (Caruana et al., 2004) adds, one at a time, the backbone
whose inclusion lowers the OOF log-loss (under each blend's best temperature) most, for
`ensemble.max_steps` steps, and keeps the best blend seen. The ensemble's reported OOF
accuracy is cross-fitted: each fold is blended with weights fitted on the other folds, so the figure
is not flattered by having chosen the weights on the rows it scores. If the blend does not beat the
best single backbone on that honest figure, the stage says so and submits that backbone alone.

Reads what `oof@<backbone>` wrote (oof/<backbone>.csv, test_predictions/<backbone>.csv); writes
ensemble/oof.csv (OOF schema), ensemble/test.csv, ensemble/weights.json and metrics/ensemble.json.
Regression targets (valence, arousal), when the data has them, are blended with the very weights
of the probabilities (per fold on OOF, as the cross-fitted figure is) and scored as `oof` scores them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.evaluation.affect import target_scores
from pipeline.evaluation.blend import blend, blend_by_fold, fold_weights, greedy_weights
from pipeline.evaluation.metrics import score
from pipeline.evaluation.predictions import (
    oof_table,
    probability_table,
    read_oof_table,
    read_target_values,
    read_test_table,
    with_targets,
)
from pipeline.files import atomic_dir, write_csv, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline ensemble", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--oof", type=Path, required=True, help="folder of the backbones' OOF tables (oof/)")
    parser.add_argument(
        "--test", type=Path, required=True, help="folder of the backbones' test probabilities (test_predictions/)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for oof.csv, test.csv and weights.json")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    names = list(config.backbones)
    tables = [read_oof_table(args.oof / f"{name}.csv", data.classes, data.train_ids) for name in names]
    oof = [probs for probs, _, _ in tables]
    _, labels, folds = tables[0]
    test = [read_test_table(args.test / f"{name}.csv", data.classes, data.test_ids) for name in names]
    targets = data.target_names
    oof_values = [read_target_values(args.oof / f"{name}.csv", targets, data.train_ids) for name in names]
    test_values = [read_target_values(args.test / f"{name}.csv", targets, data.test_ids) for name in names]
    singles = {name: float((p.argmax(1) == labels).mean()) for name, p in zip(names, oof)}
    best_name = max(singles, key=singles.get)

    weights = greedy_weights(oof, labels, config.ensemble.max_steps)
    weights_of_fold = fold_weights(oof, labels, folds, config.ensemble.max_steps)
    blended_oof = blend_by_fold(oof, folds, weights_of_fold)
    blended_oof_values = blend_by_fold(oof_values, folds, weights_of_fold)
    blend_acc = float((blended_oof.argmax(1) == labels).mean())
    fallback = blend_acc <= singles[best_name]
    if fallback:
        weights = np.array([float(name == best_name) for name in names])
        blended_oof = oof[names.index(best_name)]
        blended_oof_values = oof_values[names.index(best_name)]
        verdict = (
            f"The blend ({blend_acc:.4f}) does not beat {best_name} alone ({singles[best_name]:.4f}) on OOF: "
            f"falling back to {best_name}"
        )
    else:
        verdict = (
            f"The blend ({blend_acc:.4f}) beats the best single backbone {best_name} ({singles[best_name]:.4f}) on OOF"
        )

    metrics = {
        **score(blended_oof, labels, folds, data.classes),
        "blend_accuracy": blend_acc,
        "best_single": best_name,
        "best_single_accuracy": singles[best_name],
        "gain_over_best_single": blend_acc - singles[best_name],
        "fallback": fallback,
    }
    if targets:
        metrics["targets"] = target_scores(blended_oof_values, data.train_targets, targets)
    with atomic_dir(args.out) as tmp:
        write_csv(
            with_targets(
                oof_table(data.train_ids, folds, labels, blended_oof, data.classes), blended_oof_values, targets
            ),
            tmp / "oof.csv",
        )
        write_csv(
            with_targets(
                probability_table(data.test_ids, blend(test, weights), data.classes),
                blend(test_values, weights),
                targets,
            ),
            tmp / "test.csv",
        )
        write_json(
            {
                "weights": dict(zip(names, weights.tolist())),
                "single_accuracy": singles,
                "verdict": verdict,
                "fallback": fallback,
            },
            tmp / "weights.json",
        )
    write_json(metrics, args.metrics)
    print(f"ensemble: weights {dict(zip(names, np.round(weights, 3).tolist()))}; {verdict} → {args.out}")
