"""Stage `ensemble`: blend weights over the backbones, fitted on OOF probabilities only.

Greedy forward selection with replacement (Caruana et al., 2004) adds, one at a time, the backbone
whose inclusion lowers the OOF log-loss most, and stops when none does. The ensemble's reported OOF
accuracy is cross-fitted: each fold is blended with weights fitted on the other folds, so the figure
is not flattered by having chosen the weights on the rows it scores. If the blend does not beat the
best single backbone on that honest figure, the stage says so and submits that backbone alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.metrics import log_loss_and_accuracy
from pipeline.files import write_csv, write_json
from pipeline.oof import score
from pipeline.predictions import load_backbone, oof_table
from pipeline.train import probability_table


def greedy_weights(probs: list[np.ndarray], labels: np.ndarray, max_steps: int) -> np.ndarray:
    """Blend weights (summing to one) by greedy forward selection with replacement."""
    counts = np.zeros(len(probs))
    total = np.zeros_like(probs[0])
    best_loss = np.inf
    for step in range(1, max_steps + 1):
        losses = [log_loss_and_accuracy((total + p) / step, labels)[0] for p in probs]
        pick = int(np.argmin(losses))
        if losses[pick] >= best_loss:
            break
        best_loss = losses[pick]
        counts[pick] += 1
        total += probs[pick]
    return counts / counts.sum()


def blend(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs))


def cross_fitted_blend(probs: list[np.ndarray], labels: np.ndarray, folds: np.ndarray, max_steps: int) -> np.ndarray:
    """OOF blend where each fold's rows use weights fitted on the other folds only."""
    out = np.zeros_like(probs[0])
    for fold in np.unique(folds):
        rest, held = folds != fold, folds == fold
        weights = greedy_weights([p[rest] for p in probs], labels[rest], max_steps)
        out[held] = blend([p[held] for p in probs], weights)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline ensemble", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--oof", type=Path, required=True, help="OOF table to write for the ensemble")
    parser.add_argument("--out", type=Path, required=True, help="folder for weights.json and test.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    names = list(config.backbones)
    runs = [load_backbone(args.models, name, config.folds.ids, data.classes, data.train_ids) for name in names]
    labels, folds = runs[0].labels, runs[0].folds
    oof = [r.oof_tta for r in runs]
    singles = {name: float((p.argmax(1) == labels).mean()) for name, p in zip(names, oof)}
    best_name = max(singles, key=singles.get)

    weights = greedy_weights(oof, labels, config.ensemble.max_steps)
    blended_oof = cross_fitted_blend(oof, labels, folds, config.ensemble.max_steps)
    blend_acc = float((blended_oof.argmax(1) == labels).mean())
    fallback = blend_acc <= singles[best_name]
    if fallback:
        weights = np.array([float(name == best_name) for name in names])
        blended_oof = oof[names.index(best_name)]
        verdict = f"The blend ({blend_acc:.4f}) does not beat {best_name} alone ({singles[best_name]:.4f}) on OOF: falling back to {best_name}"
    else:
        verdict = f"The blend ({blend_acc:.4f}) beats the best single backbone {best_name} ({singles[best_name]:.4f}) on OOF"

    metrics = {**score(blended_oof, labels, folds, data.classes), "blend_accuracy": blend_acc, "best_single": best_name,
               "best_single_accuracy": singles[best_name], "gain_over_best_single": blend_acc - singles[best_name], "fallback": fallback}
    write_csv(oof_table(runs[0].ids, folds, labels, blended_oof, data.classes), args.oof)
    write_csv(probability_table(runs[0].test_ids, blend([r.test for r in runs], weights), data.classes), args.out / "test.csv")
    write_json({"weights": dict(zip(names, weights.tolist())), "single_accuracy": singles, "verdict": verdict, "fallback": fallback}, args.out / "weights.json")
    write_json(metrics, args.metrics)
    print(f"ensemble: weights {dict(zip(names, np.round(weights, 3).tolist()))}; {verdict} → {args.oof}, {args.out}")
