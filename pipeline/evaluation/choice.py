"""What the ensemble submits: the blend or the best single backbone (`choose_blend`), and how its probabilities
become the submitted classes where the metric scores classes and OOF says a fitted rule beats the most probable
class: an ordinal grade cut at fitted points (`choose_cuts`), multi-label classes decided at fitted per-class
thresholds (`choose_thresholds`). Every choice is made on cross-fitted OOF figures, which it reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
from pipeline.evaluation.metrics import Metric
from pipeline.evaluation.ordinal import classes_at, cross_fitted_classes, fit_cuts, grades_of, one_hot
from pipeline.evaluation.thresholds import at_thresholds, cross_fitted_thresholds, fit_thresholds


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
    fallback: bool  # a member is submitted alone: `member`
    sharpness: float | None  # under log-loss: the inverse temperature of the submitted probabilities
    verdict: str
    member: str | None = None  # the member submitted alone (None: the blend)
    holdout: dict | None = None  # holdout_judgement's scores, fold-averaged as submitted
    holdout_probs: np.ndarray | None = None  # the submitted blend (or member) on the holdout


def choose_blend(
    names: list[str],
    oof: list[np.ndarray],
    test: list[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    metric: Metric,
    max_steps: int,
    holdout: list[np.ndarray] | None = None,
    holdout_labels: np.ndarray | None = None,
) -> Choice:
    """The blend fitted on OOF, or one member alone where the blend does not beat it: judged on the cross-fitted OOF
    scores, or, given the members' `holdout` probabilities (each the average of its fold models, as its test
    probabilities are), on the holdout as submitted. OOF scores one fold model per image; averaging K of them gains
    more for one member than for a blend, whose members already average out each other's errors, so OOF can favour
    a blend the submission does not."""
    if metric.reads == "ranks":  # a ranking metric blends ranks: members on different scales count alike
        oof, test = [column_ranks(p) for p in oof], [column_ranks(p) for p in test]
        holdout = None if holdout is None else [column_ranks(p) for p in holdout]
    calibrate = metric.reads == "probabilities" and labels.ndim == 1  # a temperature tempers one distribution

    def as_submitted(probs: np.ndarray) -> np.ndarray:
        """OOF probabilities as submitted: under log-loss, tempered as fitted on the other folds."""
        return cross_fitted_sharpening(probs, labels, folds) if calibrate else probs

    singles = {name: metric(as_submitted(p), labels) for name, p in zip(names, oof)}
    best = min(singles, key=lambda name: metric.loss(singles[name]))
    weights = greedy_weights(oof, labels, max_steps, metric)
    weights_of_fold = fold_weights(oof, labels, folds, max_steps, metric)
    blended_oof = as_submitted(blend_by_fold(oof, folds, weights_of_fold))
    blend_score = metric(blended_oof, labels)
    judged = None
    if holdout is None:
        member = None if metric.better(blend_score, than=singles[best]) else best
        verdict = (
            f"The blend ({metric.name} {blend_score:.4f}) beats the best single backbone {best} ({singles[best]:.4f}) "
            "on OOF"
            if member is None
            else f"The blend ({metric.name} {blend_score:.4f}) does not beat {best} alone ({singles[best]:.4f}) on "
            f"OOF: falling back to {best}"
        )
    else:
        judged = holdout_judgement(names, oof, holdout, labels, holdout_labels, weights, metric, calibrate)
        member = judged["best_member"] if judged["member_wins"] else None
        blend_part = "" if judged["blend"] is None else f"the blend {judged['blend']:.4f} against "
        verdict = (
            f"On OOF the blend ({metric.name} {blend_score:.4f}) against the best single backbone {best} "
            f"({singles[best]:.4f}); on the holdout, fold-averaged as submitted, {blend_part}"
            f"{judged['best_member']} alone {judged['members'][judged['best_member']]:.4f}: "
            + ("the blend is submitted" if member is None else f"{member} is submitted alone")
        )
    if judged is not None:
        judged["submitted"] = judged["blend"] if member is None else judged["members"][member]
    if member is not None:
        weights = np.array([float(name == member) for name in names])
        blended_oof = as_submitted(oof[names.index(member)])
    blended_test, sharpness = blend(test, weights), None
    blended_holdout = None if holdout is None else blend(holdout, weights)
    if calibrate:  # the temperature fitted on all the OOF rows, as the weights are
        sharpness = fit_sharpness(blend(oof, weights), labels)
        blended_test = sharpen(blended_test, sharpness)
        blended_holdout = None if holdout is None else sharpen(blended_holdout, sharpness)
    return Choice(
        weights,
        weights_of_fold,
        blended_oof,
        blended_test,
        blend_score,
        singles,
        best,
        member is not None,
        sharpness,
        verdict,
        member=member,
        holdout=judged,
        holdout_probs=blended_holdout,
    )


def holdout_judgement(
    names: list[str],
    oof: list[np.ndarray],
    holdout: list[np.ndarray],
    labels: np.ndarray,
    holdout_labels: np.ndarray,
    blend_weights: np.ndarray,
    metric: Metric,
    calibrate: bool,
) -> dict:
    """Each member alone and the OOF-fitted blend scored on the holdout as submitted (under log-loss, tempered as
    fitted on OOF), and whether the best member there beats the blend."""

    def score(weights: np.ndarray) -> float:
        probs = blend(holdout, weights)
        if calibrate:
            probs = sharpen(probs, fit_sharpness(blend(oof, weights), labels))
        return metric(probs, holdout_labels)

    members = {name: score(np.array([float(other == name) for other in names])) for name in names}
    best = min(members, key=lambda name: metric.loss(members[name]))
    blended = score(blend_weights) if np.count_nonzero(blend_weights) > 1 else None
    return {
        "images": len(holdout_labels),
        "members": members,
        "blend": blended,
        "best_member": best,
        "member_wins": blended is None or not metric.better(blended, than=members[best]),
    }


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


@dataclass(frozen=True)
class Thresholds:
    """A multi-label competition's decisions: each class decided at the threshold that scores best on OOF."""

    thresholds: np.ndarray  # per class, fitted on every OOF row: where the test probabilities are decided
    oof: np.ndarray  # cross-fitted OOF probabilities shifted so that 0.5 decides (thresholds.at_thresholds)
    test: np.ndarray  # the test probabilities so shifted
    score: float
    verdict: str


def choose_thresholds(
    chosen: Choice, blended_oof: np.ndarray, labels: np.ndarray, folds: np.ndarray, metric: Metric
) -> Thresholds | None:
    """Per-class thresholds fitted on OOF where they beat 0.5 on cross-fitted OOF; else None. `blended_oof`: the
    OOF rows blended by the submitted weights."""
    shifted = cross_fitted_thresholds(chosen.oof, labels, folds, metric)
    fitted_score, plain_score = metric(shifted, labels), metric(chosen.oof, labels)
    if not metric.better(fitted_score, than=plain_score):
        print(f"ensemble: thresholds fitted on OOF ({metric.name} {fitted_score:.4f}) do not beat 0.5 for all")
        return None
    thresholds = fit_thresholds(blended_oof, labels, metric)
    verdict = (
        f"Per-class thresholds {np.round(thresholds, 2).tolist()} ({metric.name} {fitted_score:.4f}, cross-fitted) "
        f"beat 0.5 for all ({plain_score:.4f}) on OOF: submitted so"
    )
    return Thresholds(thresholds, shifted, at_thresholds(chosen.test, thresholds), fitted_score, verdict)
