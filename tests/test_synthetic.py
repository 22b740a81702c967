import numpy as np
import pandas as pd

from pipeline.ingest.synthetic import CLASSES, PROTOTYPES, draw_face, generate
from tests.conftest import TINY


def test_same_seed_same_competition_other_seed_different():
    train_a, images_a, test_a, _ = generate(TINY)
    train_b, images_b, test_b, _ = generate(TINY)
    pd.testing.assert_frame_equal(train_a, train_b)
    assert all(np.array_equal(x, y) for x, y in zip(images_a, images_b))
    _, images_c, _, _ = generate(TINY.__class__(**{**TINY.__dict__, "seed": TINY.seed + 1}))
    assert not np.array_equal(images_a[0], images_c[0])


def test_faces_are_grayscale_uint8_of_the_configured_size_and_vary():
    rng = np.random.default_rng(0)
    faces = [draw_face(rng, PROTOTYPES["happy"], 48) for _ in range(3)]
    assert all(f.shape == (48, 48) and f.dtype == np.uint8 for f in faces)
    assert not np.array_equal(faces[0], faces[1])


def test_every_class_present_and_duplicates_are_exact_copies():
    train, images, _, _ = generate(TINY)
    assert set(train["label"]) == set(CLASSES)
    digests = pd.Series([im.tobytes() for im in images])
    assert digests.duplicated().sum() >= round(TINY.duplicate_fraction * len(images) * 0.9)


def test_written_layout_matches_a_kaggle_image_competition(competition):
    root = competition / "competition"
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(CLASSES)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    answers = pd.read_csv(competition / "answers.csv", dtype=str)
    assert list(sample.columns) == ["id", "label"]
    assert sorted(sample["id"]) == sorted(answers["id"]) == sorted(p.stem for p in (root / "test").iterdir())
    assert not (root / "answers.csv").exists()  # the answers stay hidden beside the competition
