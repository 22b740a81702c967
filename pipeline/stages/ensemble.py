"""Stage `ensemble`: blend weights over the backbones, fitted on OOF probabilities only, by the competition's metric.

Greedy forward selection with replacement (Caruana et al., 2004) adds, one at a time, the backbone
whose inclusion scores best by `competition.metric` (pipeline/evaluation/blend.py), for
`ensemble.max_steps` steps, and keeps the best blend seen. Under log-loss the blend is also
sharpened or softened by the one temperature that fits the OOF rows best, and submitted so; under a
metric that only ranks (ROC AUC) the members' column ranks are blended. The ensemble's reported OOF
score is cross-fitted: each fold is blended (and tempered) with what was fitted on the other folds, so
the figure is not flattered by having been chosen on the rows it scores. If the blend does not beat
the best single backbone on that honest figure, the stage says so and submits that backbone alone.

Reads what `oof@<backbone>` wrote (oof/<backbone>.csv, test_predictions/<backbone>.csv); writes
ensemble/oof.csv (OOF schema), ensemble/test.csv, ensemble/weights.json and metrics/ensemble.json.
Regression targets (valence, arousal), when the data has them, are blended with the very weights
of the probabilities (per fold on OOF, as the cross-fitted figure is) and scored as `oof` scores them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.evaluation.affect import target_scores
from pipeline.evaluation.blend import (
    blend,
    blend_by_fold,
    column_ranks,
    cross_fitted_sharpening,
    fit_sharpness,
    fold_weights,
    greedy_weights,
    sharpen,
)
from pipeline.evaluation.metrics import Metric, competition_metric, score
from pipeline.evaluation.ordinal import (
    GRADE,
    ORDINAL_METRICS,
    classes_at,
    cross_fitted_classes,
    fit_cuts,
    grades_of,
    one_hot,
)
from pipeline.evaluation.predictions import (
    oof_table,
    probability_table,
    read_oof_table,
    read_target_values,
    read_test_table,
    with_targets,
)
from pipeline.files import atomic_dir, write_csv, write_json


@dataclass(frozen=True)
class Choice:
    """The blend the ensemble submits, or the best single backbone where the blend does not beat it."""

    weights: np.ndarray  # fitted on every OOF row: the test blend's
    weights_of_fold: dict[int, np.ndarray]  # per fold, fitted on the other folds: the honest OOF blend's
    oof: np.ndarray  # cross-fitted OOF predictions, as submitted (tempered under log-loss)
    test: np.ndarray  # the test predictions submitted
    blend_score: float  # the cross-fitted blend's OOF score
    singles: dict[str, float]  # each backbone's OOF score, as it would be submitted
    best_single: str
    fallback: bool
    sharpness: float | None  # under log-loss: the inverse temperature of the submitted probabilities
    verdict: str


def choose_blend(
    names: list[str],
    oof: list[np.ndarray],
    test: list[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    metric: Metric,
    max_steps: int,
) -> Choice:
    if metric.reads == "ranks":  # a ranking metric blends ranks: members on different scales count alike
        oof, test = [column_ranks(p) for p in oof], [column_ranks(p) for p in test]
    calibrate = metric.reads == "probabilities"

    def as_submitted(probs: np.ndarray) -> np.ndarray:
        """OOF probabilities as submitted: under log-loss, tempered as fitted on the other folds."""
        return cross_fitted_sharpening(probs, labels, folds) if calibrate else probs

    singles = {name: metric(as_submitted(p), labels) for name, p in zip(names, oof)}
    best = min(singles, key=lambda name: metric.loss(singles[name]))
    weights = greedy_weights(oof, labels, max_steps, metric)
    weights_of_fold = fold_weights(oof, labels, folds, max_steps, metric)
    blended_oof = as_submitted(blend_by_fold(oof, folds, weights_of_fold))
    blend_score = metric(blended_oof, labels)
    fallback = not metric.better(blend_score, than=singles[best])
    verdict = (
        f"The blend ({metric.name} {blend_score:.4f}) beats the best single backbone {best} ({singles[best]:.4f}) "
        "on OOF"
    )
    if fallback:
        weights = np.array([float(name == best) for name in names])
        blended_oof = as_submitted(oof[names.index(best)])
        verdict = (
            f"The blend ({metric.name} {blend_score:.4f}) does not beat {best} alone ({singles[best]:.4f}) on OOF: "
            f"falling back to {best}"
        )
    blended_test, sharpness = blend(test, weights), None
    if calibrate:  # the temperature fitted on all the OOF rows, as the weights are
        sharpness = fit_sharpness(blend(oof, weights), labels)
        blended_test = sharpen(blended_test, sharpness)
    return Choice(
        weights, weights_of_fold, blended_oof, blended_test, blend_score, singles, best, fallback, sharpness, verdict
    )


@dataclass(frozen=True)
class Cuts:
    """An ordinal competition's submitted classes: the blended grade cut where it scores best on OOF."""

    cuts: np.ndarray  # fitted on every OOF row: where the test grades are cut
    oof: np.ndarray  # cross-fitted OOF classes as probability rows (one-hot)
    test: np.ndarray  # the test classes as probability rows (one-hot)
    score: float  # the cross-fitted OOF score of the cut classes
    verdict: str


def choose_cuts(
    chosen: Choice,
    grades: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    num_classes: int,
    metric: Metric,
) -> Cuts | None:
    """The blended grade cut at fitted points, where that beats the most probable class on cross-fitted OOF; else
    None. `grades`: the blended grades of the OOF rows (each fold blended by its own weights), of the OOF rows by
    the submitted weights and of the test rows."""
    fold_blended, blended, test = (grades_of(g, num_classes) for g in grades)
    oof_classes = cross_fitted_classes(fold_blended, labels, folds, num_classes, metric)
    cut_score, argmax_score = metric(one_hot(oof_classes, num_classes), labels), metric(chosen.oof, labels)
    if not metric.better(cut_score, than=argmax_score):
        print(f"ensemble: the grade cut on OOF ({metric.name} {cut_score:.4f}) does not beat the most probable class")
        return None
    cuts = fit_cuts(blended, labels, num_classes, metric)
    verdict = (
        f"The regressed grade cut at {np.round(cuts, 2).tolist()} ({metric.name} {cut_score:.4f}, cross-fitted) "
        f"beats the most probable class ({argmax_score:.4f}) on OOF: submitted so"
    )
    test_classes = one_hot(classes_at(test, cuts), num_classes)
    return Cuts(cuts, one_hot(oof_classes, num_classes), test_classes, cut_score, verdict)


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
    metric = competition_metric(config.competition.metric, data.submission_form)
    chosen = choose_blend(names, oof, test, labels, folds, metric, config.ensemble.max_steps)
    weights, blended_oof = chosen.weights, chosen.oof
    blended_oof_values = blend_by_fold(oof_values, folds, chosen.weights_of_fold)
    if chosen.fallback:
        blended_oof_values = oof_values[names.index(chosen.best_single)]
    blended_test, verdict, cut = chosen.test, chosen.verdict, None
    if metric.name in ORDINAL_METRICS and GRADE in targets:
        g = targets.index(GRADE)
        grades = (blended_oof_values[:, g], blend(oof_values, weights)[:, g], blend(test_values, weights)[:, g])
        cut = choose_cuts(chosen, grades, labels, folds, len(data.classes), metric)
    if cut is not None:  # the tables then hold the submitted classes, so that every reader scores what is submitted
        blended_oof, blended_test, verdict = cut.oof, cut.test, f"{verdict}. {cut.verdict}"
    best_single_score = chosen.singles[chosen.best_single]
    metrics = {
        **score(blended_oof, labels, folds, data.classes, metric),
        "blend_score": chosen.blend_score,
        "best_single": chosen.best_single,
        "best_single_score": best_single_score,
        "gain_over_best_single": metric.gain(chosen.blend_score, over=best_single_score),
        "fallback": chosen.fallback,
        "cut_score": None if cut is None else cut.score,
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
                probability_table(data.test_ids, blended_test, data.classes), blend(test_values, weights), targets
            ),
            tmp / "test.csv",
        )
        write_json(
            {
                "weights": dict(zip(names, weights.tolist())),
                "metric": metric.name,
                "single_scores": chosen.singles,
                "sharpness": chosen.sharpness,
                "verdict": verdict,
                "fallback": chosen.fallback,
                "cuts": None if cut is None else cut.cuts.tolist(),
            },
            tmp / "weights.json",
        )
    write_json(metrics, args.metrics)
    print(f"ensemble: weights {dict(zip(names, np.round(weights, 3).tolist()))}; {verdict} → {args.out}")
