"""The leaderboard expectation: OOF accuracy plus the gain of averaging fold models, estimated on unlabelled test
images."""

import numpy as np
import pytest

from pipeline.evaluation.expectation import expect


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def draw_images(
    rng: np.random.Generator, count: int, fold_models: int, noise: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels drawn from known class probabilities, and fold models that each see them through their own noise."""
    truth = rng.normal(0, 2.0, (count, 7))
    labels = (rng.random(count)[:, None] > np.cumsum(softmax(truth), axis=1)).sum(axis=1)
    return labels, [softmax(truth + rng.normal(0, noise, truth.shape)) for _ in range(fold_models)]


@pytest.mark.parametrize("fold_models, noise", [(2, 0.5), (3, 1.0), (5, 1.5)])
def test_the_estimated_gain_is_the_gain_measured_on_labelled_images(fold_models, noise):
    rng = np.random.default_rng(fold_models)
    labels, labelled = draw_images(rng, 20000, fold_models, noise)
    single = float(np.mean([(p.argmax(1) == labels).mean() for p in labelled]))  # what OOF measures
    measured_gain = float((np.mean(labelled, axis=0).argmax(1) == labels).mean()) - single
    _, test = draw_images(rng, 5000, fold_models, noise)  # the test images' labels stay unseen

    expected = expect(test, single, 20000, 0.95)

    assert measured_gain > 0.005
    assert expected.gain == pytest.approx(measured_gain, abs=2 * expected.gain_se)
    assert expected.accuracy == pytest.approx(single + expected.gain)
    assert expected.interval[0] < single + measured_gain < expected.interval[1]


def test_fold_models_that_agree_gain_nothing_and_the_interval_narrows_with_more_test_images():
    rng = np.random.default_rng(0)
    _, (model,) = draw_images(rng, 8000, 1, 1.0)
    small = expect([model[:400]] * 3, 0.6, 8000, 0.95)
    large = expect([model] * 3, 0.6, 8000, 0.95)
    for expected in (small, large):
        assert (
            expected.gain == pytest.approx(0, abs=1e-12)
            and expected.disagreement == 0
            and expected.accuracy == pytest.approx(0.6)
        )
        assert expected.interval[0] < 0.6 < expected.interval[1]
    assert np.diff(large.interval)[0] < np.diff(small.interval)[0]
