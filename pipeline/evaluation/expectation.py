"""What a submission should score on the leaderboard: its score on a labelled holdout, where there is one
(`expect_from_holdout`), else its OOF accuracy plus the gain of averaging fold models (`expect`).

A holdout (data.holdout_fraction) is scored as the test is: by every fold model, averaged. Its score is
then a direct measure of the submission; under accuracy its interval adds the leaderboard's own sampling to
the holdout's, under another metric it is the holdout's bootstrap interval.
Without one:

Each OOF prediction comes from one fold model; a test prediction averages all K of them, which
scores higher. That gain is estimated on the unlabelled test images. The fold models' averaged
probabilities, sharpened or softened by one temperature, stand in for the unknown class
probabilities; the temperature is the one under which the single fold models score, on average,
their measured OOF accuracy. Under it, the averaged prediction's expected accuracy is the
leaderboard estimate. Only images where fold models disagree contribute to the gain.

Checked against measured gains (accuracy points, estimate vs truth):
- FER-2013 fold 0, held out from face_vgg models of the ablation (benchmarks/ablation.py), 15 checks
  on random halves: pairs of models +0.35..+0.58 vs +0.38..+0.65, and +1.07..+1.18 vs +0.70..+1.06
  for a pair with one weak member; four models +0.72..+0.90 vs +1.03..+1.35.
- The synthetic default's test answers, three runs: +1.27 vs +1.28, +0.82 vs +1.50, +0.83 vs +1.55.
- A 12-epoch resnet10t run on FER-2013: +1.37; a run of the same settings scored 1.4 points above
  its OOF on the hidden test.

The interval is a prediction interval for a leaderboard scored on a share of the test images
(Kaggle scores the public and the private leaderboard on separate parts): the OOF estimate's
sampling error, the gain estimate's, and the leaderboard's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from pipeline.evaluation.metrics import Metric

# The leaderboard is scored on this share of the test images; Kaggle commonly splits them in halves.
LEADERBOARD_SHARE = 0.5
# The method's own error, as a share of the gain: against measured gains its estimates ranged from
# about half to 1.7 times the truth (the checks above).
GAIN_RELATIVE_ERROR = 0.5
TEMPERATURE_RANGE = (1e-2, 1e2)  # wide enough for any calibration seen; beyond it the probabilities are one-hot or flat


@dataclass(frozen=True)
class Expectation:
    oof_accuracy: float
    gain: float  # of averaging the fold models, estimated on the test images
    gain_se: float  # sampling error over the test images and the method's own error together
    disagreement: (
        float  # share of test images where a fold model's class differs from the average's, mean over fold models
    )
    temperature: float | None  # None: no temperature reproduces the OOF accuracy, and the gain is taken as 0
    interval: tuple[float, float]

    @property
    def accuracy(self) -> float:
        return self.oof_accuracy + self.gain

    def as_metrics(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "ci_low": self.interval[0],
            "ci_high": self.interval[1],
            "oof_accuracy": self.oof_accuracy,
            "fold_averaging_gain": self.gain,
            "fold_averaging_gain_se": self.gain_se,
            "fold_disagreement": self.disagreement,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class HoldoutExpectation:
    metric: str
    score: float  # the submission's on the holdout, every fold model averaged
    images: int
    interval: tuple[float, float]

    def as_metrics(self) -> dict:
        return {
            "metric": self.metric,
            "score": self.score,
            "ci_low": self.interval[0],
            "ci_high": self.interval[1],
            "holdout_images": self.images,
            "source": "holdout",
        }


def expect_from_holdout(
    probs: np.ndarray, labels: np.ndarray, metric: Metric, test_count: int, confidence: float
) -> HoldoutExpectation:
    """The leaderboard score expected of a submission that scores `probs` on the holdout. Accuracy's interval adds
    the leaderboard's own sampling to the holdout's (both binomial); another metric's is the holdout's bootstrap."""
    value = metric(probs, labels)
    if metric.name == "accuracy" and labels.ndim == 1:
        variance = value * (1 - value) * (1 / len(labels) + 1 / leaderboard_count(test_count))
        half_width = float(norm.ppf((1 + confidence) / 2) * np.sqrt(variance))
        interval = (max(0.0, value - half_width), min(1.0, value + half_width))
    else:
        interval = metric.interval(probs, labels)
    return HoldoutExpectation(metric.name, value, len(labels), interval)


def leaderboard_count(test_count: int) -> int:
    """How many test images one leaderboard is scored on."""
    return max(1, int(test_count * LEADERBOARD_SHARE))


def softened(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_hits(posterior: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per image, the probability under `posterior` that the predicted class is right."""
    return posterior[np.arange(len(predicted)), predicted]


def expect(fold_probs: list[np.ndarray], oof_accuracy: float, oof_count: int, confidence: float) -> Expectation:
    """The leaderboard accuracy of the fold models' average, from their test probabilities and the OOF accuracy of
    one."""
    averaged = np.mean(fold_probs, axis=0)
    averaged_class = averaged.argmax(axis=1)
    fold_classes = [p.argmax(axis=1) for p in fold_probs]
    disagreement = float(np.mean([(c != averaged_class).mean() for c in fold_classes]))

    def single_accuracy(temperature: float) -> float:
        posterior = softened(averaged, temperature)
        return float(np.mean([expected_hits(posterior, c).mean() for c in fold_classes]))

    low, high = TEMPERATURE_RANGE
    temperature = None
    gain = gain_se = 0.0
    if (single_accuracy(low) - oof_accuracy) * (single_accuracy(high) - oof_accuracy) < 0:
        temperature = float(brentq(lambda t: single_accuracy(t) - oof_accuracy, low, high))
        posterior = softened(averaged, temperature)
        per_image = expected_hits(posterior, averaged_class) - np.mean(
            [expected_hits(posterior, c) for c in fold_classes], axis=0
        )
        gain = float(per_image.mean())
        gain_se = float(np.hypot(per_image.std() / np.sqrt(len(per_image)), GAIN_RELATIVE_ERROR * gain))
    accuracy = oof_accuracy + gain
    variance = (
        oof_accuracy * (1 - oof_accuracy) / oof_count
        + gain_se**2
        + accuracy * (1 - accuracy) / leaderboard_count(len(averaged))
    )
    half_width = float(norm.ppf((1 + confidence) / 2) * np.sqrt(variance))
    return Expectation(
        oof_accuracy,
        gain,
        gain_se,
        disagreement,
        temperature,
        (max(0.0, accuracy - half_width), min(1.0, accuracy + half_width)),
    )
