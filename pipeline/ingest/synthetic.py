"""A synthetic facial-expression competition, deterministic from a seed.

Faces are drawn at twice the target size and shrunk, so strokes are anti-aliased as in a photo.
The seven FER-2013 classes differ only by the shape of the mouth, eyebrows and eyes; pose, scale,
lighting, noise, per-face variation of every feature and some label noise keep the task from being
trivial. The competition is written in Kaggle's image layout, with the answers beside it.

Each face is drawn at an intensity: its expression's departure from neutral, scaled. Its valence
and arousal (AffectNet's regression targets) are its class's anchor on the circumplex scaled by
that intensity, plus annotator noise, so they are read from the face, not only from its class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import pandas as pd

from pipeline.config import SyntheticConfig
from pipeline.evaluation.affect import MISSING_MARK, VALUE_RANGE

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Class frequencies shaped like FER-2013's (disgust rare, happy common).
CLASS_SHARE = np.array([0.14, 0.04, 0.14, 0.24, 0.17, 0.11, 0.16])


@dataclass(frozen=True)
class Expression:
    eye_open: float  # eye height relative to a neutral eye
    brow_raise: float  # pixels (on the drawing canvas) above the neutral brow line
    brow_slant: float  # >0: inner ends down (frown), <0: inner ends up (worry)
    mouth_curve: float  # >0: smile, <0: frown
    mouth_open: float  # 0 closed .. 1 wide open
    mouth_width: float  # relative to a neutral mouth
    asymmetry: float  # one-sided mouth lift (disgust)


PROTOTYPES = {
    "angry": Expression(0.6, -3.0, 1.0, -0.3, 0.0, 0.85, 0.0),
    "disgust": Expression(0.5, -2.0, 0.6, -0.5, 0.15, 0.9, 1.0),
    "fear": Expression(1.4, 3.0, -0.8, -0.2, 0.5, 1.2, 0.0),
    "happy": Expression(0.9, 0.0, 0.0, 1.0, 0.25, 1.2, 0.0),
    "sad": Expression(0.8, 1.0, -1.0, -0.9, 0.0, 0.9, 0.0),
    "surprise": Expression(1.5, 5.0, 0.0, 0.0, 1.0, 0.7, 0.0),
    "neutral": Expression(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0),
}
# Per-face spread of each feature: wide enough that neighbouring classes overlap.
SPREAD = Expression(0.22, 1.6, 0.45, 0.35, 0.18, 0.15, 0.35)

TARGETS = ("valence", "arousal")
# (valence, arousal) of each class at full intensity, after Russell's circumplex of affect.
AFFECT_ANCHORS = {
    "angry": (-0.6, 0.7),
    "disgust": (-0.7, 0.3),
    "fear": (-0.6, 0.8),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.4),
    "surprise": (0.2, 0.8),
    "neutral": (0.0, 0.0),
}
INTENSITY_RANGE = (0.7, 1.3)  # uniform; mean 1 keeps the classes as far apart as the prototypes
AFFECT_NOISE = 0.08  # annotators' disagreement on valence and arousal (standard deviation)
AFFECT_MISSING = 0.03  # fraction of values not annotated (written as MISSING_MARK)
AFFECT_SEED_OFFSET = 7  # the affect draws use their own generator: the faces' draws stay in their order


def draw_face(rng: np.random.Generator, expression: Expression, size: int, spread: float = 1.0) -> np.ndarray:
    """One grayscale face of `size`×`size` pixels, uint8; `spread` scales the per-face variation."""
    canvas_size = 2 * size
    s = canvas_size / 96  # feature geometry is written for a 96-pixel canvas
    e = Expression(*(p + rng.normal(0, d * spread) for p, d in zip(_astuple(expression), _astuple(SPREAD))))
    background = rng.uniform(20, 120)
    skin = rng.uniform(130, 220)
    ink = rng.uniform(10, 70)
    canvas = np.full((canvas_size, canvas_size), background, np.float32)
    c = canvas_size / 2
    cv2.ellipse(canvas, _pt(c, c + 4 * s), _pt(31 * s, 40 * s), 0, 0, 360, skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        eye_x, eye_y = c + side * 14 * s, c - 6 * s
        eye_h = max(0.8, 4.0 * s * e.eye_open)
        cv2.ellipse(canvas, _pt(eye_x, eye_y), _pt(6 * s, eye_h), 0, 0, 360, 245, -1, cv2.LINE_AA)
        cv2.circle(canvas, _pt(eye_x, eye_y), max(1, round(2.5 * s)), ink, -1, cv2.LINE_AA)
        brow_y = eye_y - 9 * s - e.brow_raise * s
        inner = (eye_x - side * 7 * s, brow_y + e.brow_slant * 4 * s)
        outer = (eye_x + side * 7 * s, brow_y - e.brow_slant * 1.5 * s)
        cv2.line(canvas, _pt(*inner), _pt(*outer), ink, max(1, round(2.5 * s)), cv2.LINE_AA)
    _draw_mouth(canvas, e, c, c + 20 * s, s, ink)
    return _photograph(rng, canvas, size)


def _draw_mouth(canvas: np.ndarray, e: Expression, x: float, y: float, s: float, ink: float) -> None:
    half_width = 12 * s * max(0.4, e.mouth_width)
    xs = np.linspace(-half_width, half_width, 24)
    t = xs / half_width
    lift = -e.mouth_curve * 6 * s * (t**2 - 0.5) - e.asymmetry * 3 * s * t
    upper = np.stack([x + xs, y + lift], axis=1)
    opening = max(0.0, e.mouth_open) * 9 * s * (1 - t**2)
    lower = np.stack([x + xs, y + lift + opening], axis=1)
    if e.mouth_open > 0.1:
        outline = np.concatenate([upper, lower[::-1]]).round().astype(np.int32)
        cv2.fillPoly(canvas, [outline], ink * 0.6, cv2.LINE_AA)
    cv2.polylines(canvas, [upper.round().astype(np.int32)], False, ink, max(1, round(2 * s)), cv2.LINE_AA)


def _photograph(rng: np.random.Generator, canvas: np.ndarray, size: int) -> np.ndarray:
    """Random pose, scale, lighting and sensor noise, then shrink to the target size."""
    n = canvas.shape[0]
    angle = rng.normal(0, 8)
    scale = rng.uniform(0.85, 1.15)
    matrix = cv2.getRotationMatrix2D((n / 2, n / 2), angle, scale)
    matrix[:, 2] += rng.normal(0, n * 0.04, size=2)
    warped = cv2.warpAffine(canvas, matrix, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    small = cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = rng.normal(0, 18, size=2)
    lit = small * rng.uniform(0.7, 1.2) + rng.normal(0, 15) + gx * ramp[None, :] + gy * ramp[:, None]
    noisy = lit + rng.normal(0, rng.uniform(3, 12), size=lit.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def generate(config: SyntheticConfig) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, list[np.ndarray]]:
    """Train table (id, label, true_label, valence, arousal; MISSING_MARK where not annotated), train
    images, test answers (id, label, valence, arousal), test images."""
    rng = np.random.default_rng(config.seed)
    affect_rng = np.random.default_rng(config.seed + AFFECT_SEED_OFFSET)
    train_counts = np.maximum(np.round(CLASS_SHARE / CLASS_SHARE.mean() * config.train_per_class), 6).astype(int)
    train_labels = np.repeat(np.arange(len(CLASSES)), train_counts)
    test_labels = rng.choice(len(CLASSES), size=config.test_size, p=CLASS_SHARE / CLASS_SHARE.sum())
    train_intensity = affect_rng.uniform(*INTENSITY_RANGE, size=len(train_labels))
    test_intensity = affect_rng.uniform(*INTENSITY_RANGE, size=len(test_labels))
    train_images = [
        draw_face(rng, intensified(CLASSES[y], k), config.image_size, config.spread)
        for y, k in zip(train_labels, train_intensity)
    ]
    test_images = [
        draw_face(rng, intensified(CLASSES[y], k), config.image_size, config.spread)
        for y, k in zip(test_labels, test_intensity)
    ]

    n_dup = int(round(config.duplicate_fraction * len(train_images)))
    dup_sources = rng.choice(len(train_images), size=n_dup, replace=False)
    train_images += [train_images[i] for i in dup_sources]
    train_labels = np.concatenate([train_labels, train_labels[dup_sources]])
    train_affect = affect_values(affect_rng, train_labels[: len(train_intensity)], train_intensity)
    train_affect = np.concatenate([train_affect, train_affect[dup_sources]])  # a copy carries its source's annotation
    test_affect = affect_values(affect_rng, test_labels, test_intensity)

    # Annotators disagree on faces too: the published label is sometimes not the drawn one.
    noisy_train = _flip_labels(rng, train_labels, config.label_noise)
    noisy_test = _flip_labels(rng, test_labels, config.label_noise)
    train = pd.DataFrame(
        {
            "id": [f"{i:05d}" for i in range(len(train_images))],
            "label": [CLASSES[y] for y in noisy_train],
            "true_label": [CLASSES[y] for y in train_labels],
            **dict(zip(TARGETS, with_missing(affect_rng, train_affect).T)),
        }
    )
    test = pd.DataFrame(
        {
            "id": [f"t{i:05d}" for i in range(len(test_images))],
            "label": [CLASSES[y] for y in noisy_test],
            **dict(zip(TARGETS, test_affect.T)),
        }
    )
    return train, train_images, test, test_images


GRADES = ("0", "1", "2", "3", "4")
GRADE_SHARE = np.array([0.4, 0.2, 0.2, 0.12, 0.08])  # graded like APTOS 2019's retinas: most show nothing
GRADE_STEP = 0.3  # smile intensity between neighbouring grades
GRADE_JITTER = 0.08  # per-face intensity within a grade (standard deviation)


def generate_grades(config: SyntheticConfig) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, list[np.ndarray]]:
    """An ordinal competition: how broad a smile is, graded 0 (neutral) to 4. Train table (id, label, true_label),
    train images, test answers (id, label), test images; a noisy label is a neighbouring grade, as graders slip."""
    rng = np.random.default_rng(config.seed)
    shares = GRADE_SHARE / GRADE_SHARE.sum()
    train_counts = np.maximum(np.round(shares * len(GRADES) * config.train_per_class), 6).astype(int)
    train_grades = np.repeat(np.arange(len(GRADES)), train_counts)
    test_grades = rng.choice(len(GRADES), size=config.test_size, p=shares)

    def faces(grades: np.ndarray) -> list[np.ndarray]:
        intensity = grades * GRADE_STEP + rng.normal(0, GRADE_JITTER, size=len(grades))
        return [draw_face(rng, intensified("happy", k), config.image_size, config.spread) for k in intensity]

    def published(grades: np.ndarray) -> np.ndarray:
        slip = rng.random(len(grades)) < config.label_noise
        return np.clip(grades + slip * rng.choice([-1, 1], size=len(grades)), 0, len(GRADES) - 1)

    train_images, test_images = faces(train_grades), faces(test_grades)
    train = pd.DataFrame(
        {
            "id": [f"{i:05d}" for i in range(len(train_images))],
            "label": [GRADES[g] for g in published(train_grades)],
            "true_label": [GRADES[g] for g in train_grades],
        }
    )
    test = pd.DataFrame({"id": [f"t{i:05d}" for i in range(len(test_images))], "label": published(test_grades)})
    test["label"] = [GRADES[g] for g in test["label"]]
    return train, train_images, test, test_images


# A multi-label competition: facial attributes, each drawn on its own, several per face (as Planet's tags are).
ATTRIBUTES = ("smiling", "open_mouth", "raised_brows", "wide_eyes", "frowning")
ATTRIBUTE_SHARE = np.array([0.4, 0.3, 0.25, 0.2, 0.12])
ATTRIBUTE_FEATURES = {  # the Expression field each attribute sets, and to what
    "smiling": ("mouth_curve", 1.0),
    "open_mouth": ("mouth_open", 0.8),
    "raised_brows": ("brow_raise", 4.0),
    "wide_eyes": ("eye_open", 1.5),
    "frowning": ("brow_slant", 1.0),
}


def generate_attributes(
    config: SyntheticConfig,
) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, list[np.ndarray]]:
    """A multi-label competition: which of ATTRIBUTES a face shows, at least one each. Train table (id, label: the
    attributes separated by spaces, true_label), train images, test answers (id, label), test images; a noisy label
    has one attribute flipped."""
    rng = np.random.default_rng(config.seed)

    def draw_sets(count: int) -> np.ndarray:
        sets = rng.random((count, len(ATTRIBUTES))) < ATTRIBUTE_SHARE
        empty = ~sets.any(axis=1)
        sets[empty, rng.choice(len(ATTRIBUTES), size=empty.sum(), p=ATTRIBUTE_SHARE / ATTRIBUTE_SHARE.sum())] = True
        return sets

    def faces(sets: np.ndarray) -> list[np.ndarray]:
        neutral = PROTOTYPES["neutral"]
        return [
            draw_face(
                rng,
                replace(neutral, **dict(ATTRIBUTE_FEATURES[a] for a, on in zip(ATTRIBUTES, row) if on)),
                config.image_size,
                config.spread,
            )
            for row in sets
        ]

    def published(sets: np.ndarray) -> list[str]:
        noisy = sets.copy()
        slip = np.flatnonzero(rng.random(len(sets)) < config.label_noise)
        noisy[slip, rng.integers(0, len(ATTRIBUTES), size=len(slip))] ^= True
        noisy[~noisy.any(axis=1)] = sets[~noisy.any(axis=1)]  # a slip never leaves a face without attributes
        return [" ".join(np.array(ATTRIBUTES)[row]) for row in noisy]

    train_sets = draw_sets(len(CLASSES) * config.train_per_class)
    test_sets = draw_sets(config.test_size)
    train_images, test_images = faces(train_sets), faces(test_sets)
    train = pd.DataFrame(
        {
            "id": [f"{i:05d}" for i in range(len(train_images))],
            "label": published(train_sets),
            "true_label": [" ".join(np.array(ATTRIBUTES)[row]) for row in train_sets],
        }
    )
    test = pd.DataFrame({"id": [f"t{i:05d}" for i in range(len(test_images))], "label": published(test_sets)})
    return train, train_images, test, test_images


def intensified(name: str, intensity: float) -> Expression:
    """The class's prototype moved from neutral by `intensity` times its departure (1: the prototype)."""
    neutral, prototype = _astuple(PROTOTYPES["neutral"]), _astuple(PROTOTYPES[name])
    return Expression(*(n + intensity * (p - n) for n, p in zip(neutral, prototype)))


def affect_values(rng: np.random.Generator, labels: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """N×2 (valence, arousal): the drawn class's anchor scaled by the face's intensity, plus annotator noise."""
    anchors = np.array([AFFECT_ANCHORS[CLASSES[y]] for y in labels]).reshape(-1, len(TARGETS))
    noisy = anchors * intensity[:, None] + rng.normal(0, AFFECT_NOISE, size=anchors.shape)
    return np.clip(noisy, *VALUE_RANGE).round(3)


def with_missing(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """`values` with a fraction AFFECT_MISSING of them replaced by the missing mark, as annotations have gaps."""
    return np.where(rng.random(values.shape) < AFFECT_MISSING, MISSING_MARK, values)


def _flip_labels(rng: np.random.Generator, labels: np.ndarray, rate: float) -> np.ndarray:
    flip = rng.random(len(labels)) < rate
    return np.where(flip, rng.integers(0, len(CLASSES), size=len(labels)), labels)


def _astuple(e: Expression) -> tuple[float, ...]:
    return (e.eye_open, e.brow_raise, e.brow_slant, e.mouth_curve, e.mouth_open, e.mouth_width, e.asymmetry)


def _pt(x: float, y: float) -> tuple[int, int]:
    return (int(round(x)), int(round(y)))
