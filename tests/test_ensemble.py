import numpy as np

from pipeline.evaluation.blend import blend, cross_fitted_blend, greedy_weights


def noisy_model(labels: np.ndarray, accuracy: float, rng: np.random.Generator, classes: int = 3) -> np.ndarray:
    right = rng.random(len(labels)) < accuracy
    guess = np.where(right, labels, rng.integers(0, classes, len(labels)))
    probs = np.full((len(labels), classes), 0.1)
    probs[np.arange(len(labels)), guess] = 0.8
    return probs / probs.sum(1, keepdims=True)


def test_weights_sum_to_one_and_favour_the_better_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 2000)
    good, bad = noisy_model(labels, 0.8, rng), noisy_model(labels, 0.3, rng)
    weights = greedy_weights([bad, good], labels, max_steps=20)
    assert np.isclose(weights.sum(), 1.0) and weights[1] > weights[0]


def test_blending_independent_models_beats_each_of_them():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 3000)
    models = [noisy_model(labels, 0.6, rng) for _ in range(3)]
    weights = greedy_weights(models, labels, max_steps=30)

    def accuracy(probs):
        return (probs.argmax(1) == labels).mean()

    assert accuracy(blend(models, weights)) > max(accuracy(m) for m in models) + 0.03
    assert (weights > 0).sum() >= 2


def test_cross_fitted_blend_never_uses_a_folds_own_rows():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 600)
    folds = np.repeat([0, 1, 2], 200)
    # Model A is perfect on fold 0 only; fitting on fold 0 itself would pick it there.
    a = noisy_model(labels, 0.2, rng)
    a[folds == 0] = np.eye(3)[labels[folds == 0]] * 0.9 + 0.1 / 3
    b = noisy_model(labels, 0.7, rng)
    crossed = cross_fitted_blend([a, b], labels, folds, max_steps=10)
    held_out_weights = greedy_weights([a[folds != 0], b[folds != 0]], labels[folds != 0], 10)
    assert np.allclose(crossed[folds == 0], blend([a[folds == 0], b[folds == 0]], held_out_weights))


def test_an_under_confident_member_that_disagrees_usefully_is_blended_in():
    """Label smoothing leaves members under-confident; raw log-loss would keep the confident one alone
    (it did on FER-2013), though their blend is far more accurate than either."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 3000)

    def member(confidence: float) -> np.ndarray:
        logits = (1.5 * np.eye(3)[labels] + rng.normal(0, 1, (len(labels), 3))) * confidence
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    confident, timid = member(1.0), member(0.25)
    accuracy = lambda p: (p.argmax(1) == labels).mean()  # noqa: E731
    weights = greedy_weights([confident, timid], labels, max_steps=30)
    assert (weights > 0).all()
    assert accuracy(blend([confident, timid], weights)) > max(accuracy(confident), accuracy(timid)) + 0.05
