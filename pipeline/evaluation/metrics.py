"""The competition's metric and the scores shared by training, tuning, OOF scoring, the ensemble and the report.

`competition.metric` names one of METRICS (scikit-learn's implementations, scored the way Kaggle
scores them); `auto` takes log-loss where the sample submission asks for probabilities (a column per
class, or for two classes the second's) and accuracy where it asks for one label per image.

Every metric takes (probabilities N×classes, labels): labels are class indices, or for multi-label data
N×classes rows of 0/1, whose probabilities are each class's own and whose decisions (:func:`decisions`)
are the classes at 0.5 or above, the most probable one where none is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.data import LABEL_FORM
from pipeline.errors import ConfigError
from pipeline.evaluation.bootstrap import bootstrap_interval

# Kaggle's log-loss clips each probability to [1e-15, 1 - 1e-15] and rescales rows to sum to one.
LOG_LOSS_CLIP = 1e-15


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    reads: str  # labels: the most probable class | probabilities | ranks: only the order of each class column
    compute: Callable[[np.ndarray, np.ndarray], float]  # (N×C probabilities, N class indices) -> score

    def __call__(self, probs: np.ndarray, labels: np.ndarray) -> float:
        with warnings.catch_warnings():  # a class absent from a bootstrap draw is scored as Kaggle does, silently
            warnings.simplefilter("ignore")
            return float(self.compute(probs, labels))

    def loss(self, value: float) -> float:
        """`value` turned into something to minimise."""
        return -value if self.higher_is_better else value

    def better(self, value: float, than: float) -> bool:
        return self.loss(value) < self.loss(than)

    def gain(self, value: float, over: float) -> float:
        """How much better `value` scores than `over` (positive: better), in the metric's units."""
        return self.loss(over) - self.loss(value)

    def interval(self, probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """The 95% bootstrap interval of the score over the rows."""
        if self.name == "accuracy":  # a mean of per-row hits: resampling the hits is the same and far faster
            return bootstrap_interval(np.mean, hits(probs, labels).astype(np.float64))
        return bootstrap_interval(self, probs, labels)

    @property
    def worst(self) -> float:
        return -np.inf if self.higher_is_better else np.inf


def _predicted(probs: np.ndarray) -> np.ndarray:
    return probs.argmax(axis=1)


def decisions(probs: np.ndarray) -> np.ndarray:
    """Multi-label decisions (N×classes of 0/1): the classes at 0.5 or above, the most probable where none is (an
    image is submitted with at least one class; thresholds other than 0.5 are applied to the probabilities first,
    pipeline/evaluation/thresholds.py)."""
    chosen = probs >= 0.5
    none = ~chosen.any(axis=1)
    chosen[none, probs[none].argmax(axis=1)] = True
    return chosen.astype(np.int64)


def hits(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, whether it is predicted right (multi-label: its decisions are exactly its classes)."""
    if labels.ndim == 2:
        return (decisions(probs) == labels).all(axis=1)
    return _predicted(probs) == labels


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(hits(probs, labels).mean())


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Kaggle's log-loss; multi-label: the mean binary log-loss over every image and class."""
    if labels.ndim == 2:
        clipped = np.clip(probs, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
        return float(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).mean())
    clipped = np.clip(probs, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(-np.log(clipped[np.arange(len(labels)), labels]).mean())


def _sklearn():
    """scikit-learn's metrics, imported when a metric needs them: importing them costs every stage process that
    scores 0.7 s of start-up, most of which score accuracy and log-loss only."""
    from sklearn import metrics

    return metrics


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return _sklearn().balanced_accuracy_score(labels, _predicted(probs))


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    predicted = decisions(probs) if labels.ndim == 2 else _predicted(probs)
    return _sklearn().f1_score(labels, predicted, average="macro", zero_division=0)


def mean_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-label: each image's F1 of its decided classes against its true ones, averaged over the images."""
    return _sklearn().f1_score(labels, decisions(probs), average="samples", zero_division=0)


def quadratic_weighted_kappa(probs: np.ndarray, labels: np.ndarray) -> float:
    return _sklearn().cohen_kappa_score(labels, _predicted(probs), weights="quadratic")


def grade_rmse(probs: np.ndarray, labels: np.ndarray) -> float:
    """Root mean squared error of the most probable class's index against the true one (grades as numbers)."""
    return float(np.sqrt(np.mean((_predicted(probs) - labels) ** 2)))


def macro_roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over the classes that have both positives and negatives (two classes: the
    second class's AUC, as scikit-learn and Kaggle score a binary competition)."""
    roc_auc_score = _sklearn().roc_auc_score
    if labels.ndim == 2:  # multi-label: each class's AUC on its own column
        labels = labels.astype(bool)
        scores = [
            roc_auc_score(labels[:, c], probs[:, c])
            for c in range(probs.shape[1])
            if 0 < labels[:, c].sum() < len(labels)
        ]
        return float(np.mean(scores)) if scores else np.nan
    if probs.shape[1] == 2:
        return roc_auc_score(labels == 1, probs[:, 1]) if 0 < (labels == 1).sum() < len(labels) else np.nan
    scores = [
        roc_auc_score(labels == c, probs[:, c]) for c in range(probs.shape[1]) if 0 < (labels == c).sum() < len(labels)
    ]
    return float(np.mean(scores)) if scores else np.nan


METRICS = {
    metric.name: metric
    for metric in (
        Metric("accuracy", True, "labels", accuracy),
        Metric("balanced_accuracy", True, "labels", balanced_accuracy),
        Metric("macro_f1", True, "labels", macro_f1),
        Metric("mean_f1", True, "labels", mean_f1),
        Metric("qwk", True, "labels", quadratic_weighted_kappa),
        Metric("rmse", False, "labels", grade_rmse),
        Metric("log_loss", False, "probabilities", log_loss),
        Metric("roc_auc", True, "ranks", macro_roc_auc),
    )
}

ACCURACY = METRICS["accuracy"]


MULTI_LABEL_METRICS = ("accuracy", "macro_f1", "mean_f1", "log_loss", "roc_auc")


def competition_metric(name: str, submission_form: str, multi_label: bool = False) -> Metric:
    """The metric `competition.metric` names; `auto`: the one the submission form implies."""
    if name == "auto":
        name = _implied_metric(submission_form, multi_label)
    usable = MULTI_LABEL_METRICS if multi_label else [m for m in METRICS if m != "mean_f1"]
    if name not in usable:
        kind = "multi-label" if multi_label else "single-label"
        raise ConfigError(
            f"competition.metric {name} does not score {kind} data (labels listing several classes per image are "
            f"multi-label); set it to one of {list(usable)}"
        )
    metric = METRICS[name]
    if submission_form == LABEL_FORM and metric.reads != "labels":
        raise ConfigError(
            f"competition.metric {name} scores probabilities, but the sample submission takes one label per image: "
            f"set competition.metric to one of {[m for m, v in METRICS.items() if v.reads == 'labels']} "
            "(or auto), or check that data.sample_submission names the competition's own sample"
        )
    return metric


def _implied_metric(submission_form: str, multi_label: bool) -> str:
    if not multi_label:
        return "accuracy" if submission_form == LABEL_FORM else "log_loss"
    if submission_form == LABEL_FORM:
        return "mean_f1"
    raise ConfigError(
        "the sample submission has a column per class for multi-label data: 0/1 decisions or probabilities? Set "
        "competition.metric: mean_f1 or macro_f1 for decisions, roc_auc or log_loss for probabilities"
    )


def score(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, classes: list[str], metric: Metric) -> dict:
    """The metric overall and per fold, accuracy overall and per fold, recall per class, and log-loss (multi-label:
    accuracy is exact-set accuracy, and a class's recall the share of its images decided to have it)."""
    correct = hits(probs, labels)
    if labels.ndim == 2:
        found = decisions(probs).astype(bool)
        recall = [found[labels[:, i] > 0, i].mean() if labels[:, i].any() else None for i in range(len(classes))]
    else:
        recall = [correct[labels == i].mean() if (labels == i).any() else None for i in range(len(classes))]
    return {
        "metric": metric.name,
        "score": metric(probs, labels),
        "score_per_fold": {str(f): metric(probs[folds == f], labels[folds == f]) for f in np.unique(folds)},
        "accuracy": float(correct.mean()),
        "log_loss": log_loss(probs, labels),
        "per_fold": {str(f): float(correct[folds == f].mean()) for f in np.unique(folds)},
        "per_class": {name: None if r is None else float(r) for name, r in zip(classes, recall)},
        "n": int(len(labels)),
    }
