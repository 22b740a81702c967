"""Stage `ensemble`: blend weights over the backbones, fitted on OOF probabilities only, by the competition's metric.

Greedy forward selection with replacement (Caruana et al., 2004) adds, one at a time, the backbone
whose inclusion scores best by `competition.metric` (pipeline/evaluation/blend.py), for
`ensemble.max_steps` steps, and keeps the best blend seen. Under log-loss the blend is also
sharpened or softened by the one temperature that fits the OOF rows best, and submitted so; under a
metric that only ranks (ROC AUC) the members' column ranks are blended. The ensemble's reported OOF
score is cross-fitted: each fold is blended (and tempered) with what was fitted on the other folds, so
the figure is not flattered by having been chosen on the rows it scores. If the blend does not beat
the best single backbone on that honest figure, the stage says so and submits that backbone alone. With a
holdout (data.holdout_fraction) that choice is made there instead: each member's holdout probabilities are its
fold models' average, as its test probabilities are, and the blend is kept only where it beats every member
alone (metrics/ensemble.json `holdout`: each member's score, the blend's and the submission's).

Reads what `oof@<backbone>` wrote (oof/<backbone>.csv, test_predictions/<backbone>.csv and .holdout.csv);
writes ensemble/oof.csv (OOF schema), ensemble/test.csv, ensemble/holdout.csv (the submission's holdout rows,
as the blend's probabilities before any cut or threshold), ensemble/weights.json and metrics/ensemble.json.
Regression targets (valence, arousal), when the data has them, are blended with the very weights
of the probabilities (per fold on OOF, as the cross-fitted figure is) and scored as `oof` scores them.
Under an ordinal metric the blended grade may be cut at points fitted on OOF, and multi-label classes
decided at per-class thresholds fitted on OOF (pipeline/evaluation/choice.py); the tables then hold
what is submitted (weights.json: `cuts`, `thresholds`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.evaluation.affect import target_scores
from pipeline.evaluation.blend import blend, blend_by_fold
from pipeline.evaluation.choice import Choice, Cuts, Thresholds, choose_blend, choose_cuts, choose_thresholds
from pipeline.evaluation.metrics import Metric, competition_metric, score
from pipeline.evaluation.ordinal import GRADE, ORDINAL_METRICS
from pipeline.evaluation.predictions import (
    AVERAGED,
    HOLDOUT_FILE,
    HOLDOUT_SUFFIX,
    holdout_table,
    oof_table,
    probability_table,
    read_fold_test_tables,
    read_oof_table,
    read_target_values,
    read_test_table,
    with_targets,
)
from pipeline.evaluation.thresholds import at_thresholds
from pipeline.files import atomic_dir, write_csv, write_json


def submitted_holdout(
    chosen: Choice, decided: Thresholds | None, cut: Cuts | None, labels: np.ndarray | None, metric: Metric
) -> tuple[np.ndarray | None, dict | None]:
    """The submission's holdout probabilities (multi-label: shifted by the fitted thresholds, as the test's are) and
    the holdout scores, `submitted` then what the submission scores there. A grade cut cannot be applied to the
    holdout (its grades are not kept), so with one the holdout scores the blend before it: `scores_submission`."""
    if chosen.holdout is None:
        return None, None
    probs, judged = chosen.holdout_probs, dict(chosen.holdout)
    if decided is not None:
        probs = at_thresholds(probs, decided.thresholds)
        judged["submitted"] = metric(probs, labels)
    return probs, {**judged, "scores_submission": cut is None}


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
    names = config.members
    tables = [
        read_oof_table(args.oof / f"{name}.csv", data.classes, data.train_ids, data.multi_label) for name in names
    ]
    oof = [probs for probs, _, _ in tables]
    _, labels, folds = tables[0]
    test = [read_test_table(args.test / f"{name}.csv", data.classes, data.test_ids) for name in names]
    targets = data.target_names
    oof_values = [read_target_values(args.oof / f"{name}.csv", targets, data.train_ids) for name in names]
    test_values = [read_target_values(args.test / f"{name}.csv", targets, data.test_ids) for name in names]
    metric = competition_metric(config.competition.metric, data.submission_form, data.multi_label)
    holdout = None
    if data.has_holdout:  # each member's fold models averaged, as its test probabilities are
        holdout = [
            np.mean(
                read_fold_test_tables(
                    args.test / f"{name}{HOLDOUT_SUFFIX}", data.classes, data.holdout_ids, config.folds.ids
                ),
                axis=0,
            )
            for name in names
        ]
    chosen = choose_blend(
        names, oof, test, labels, folds, metric, config.ensemble.max_steps, holdout, data.holdout_labels
    )
    weights, blended_oof = chosen.weights, chosen.oof
    blended_oof_values = blend_by_fold(oof_values, folds, chosen.weights_of_fold)
    if chosen.fallback:
        blended_oof_values = oof_values[names.index(chosen.member)]
    blended_test, verdict, cut = chosen.test, chosen.verdict, None
    if metric.name in ORDINAL_METRICS and GRADE in targets:
        g = targets.index(GRADE)
        grades = (blended_oof_values[:, g], blend(oof_values, weights)[:, g], blend(test_values, weights)[:, g])
        cut = choose_cuts(chosen, grades, labels, folds, len(data.classes), metric)
    if cut is not None:  # the tables then hold the submitted classes, so that every reader scores what is submitted
        blended_oof, blended_test, verdict = cut.oof, cut.test, f"{verdict}. {cut.verdict}"
    decided = None
    if data.multi_label and metric.reads == "labels":
        decided = choose_thresholds(chosen, blend(oof, weights), labels, folds, metric)
    if decided is not None:  # the tables hold probabilities shifted so that 0.5 decides, as submitted
        blended_oof, blended_test, verdict = decided.oof, decided.test, f"{verdict}. {decided.verdict}"
    holdout_probs, judged = submitted_holdout(chosen, decided, cut, data.holdout_labels, metric)
    best_single_score = chosen.singles[chosen.best_single]
    metrics = {
        **score(blended_oof, labels, folds, data.classes, metric),
        "blend_score": chosen.blend_score,
        "best_single": chosen.best_single,
        "best_single_score": best_single_score,
        "gain_over_best_single": metric.gain(chosen.blend_score, over=best_single_score),
        "fallback": chosen.fallback,
        **({} if judged is None else {"submitted_member": chosen.member, "holdout": judged}),
        "cut_score": None if cut is None else cut.score,
        "thresholds_score": None if decided is None else decided.score,
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
        submitted = {} if holdout_probs is None else {AVERAGED: holdout_probs}
        write_csv(holdout_table(data.holdout_ids, data.holdout_labels, data.classes, submitted), tmp / HOLDOUT_FILE)
        write_json(
            {
                "weights": dict(zip(names, weights.tolist())),
                "metric": metric.name,
                "single_scores": chosen.singles,
                "sharpness": chosen.sharpness,
                "verdict": verdict,
                "fallback": chosen.fallback,
                **({} if judged is None else {"holdout": judged}),
                "cuts": None if cut is None else cut.cuts.tolist(),
                "thresholds": None if decided is None else dict(zip(data.classes, decided.thresholds.tolist())),
            },
            tmp / "weights.json",
        )
    write_json(metrics, args.metrics)
    print(f"ensemble: weights {dict(zip(names, np.round(weights, 3).tolist()))}; {verdict} → {args.out}")
