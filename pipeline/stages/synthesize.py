"""Stage `synthesize`: the embedded default competition → data/synthetic/.

Writes `competition/` in Kaggle's image layout (train/<class>/*.png, test/*.png,
sample_submission.csv, and train_affect.csv: each train image's path with its valence and arousal,
-2 where not annotated) with the hidden `answers.csv` and `train_truth.csv` beside it. The faces
come from pipeline/ingest/synthetic.py, deterministic from `synthetic.seed`; with `synthetic.photos`, each is
worn by a real face photo in a larger RGB scene (pipeline/ingest/synthetic_photos.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.config import SyntheticConfig, load_config
from pipeline.data import PROBABILITY_FORM
from pipeline.files import atomic_dir, write_csv
from pipeline.ingest.synthetic import (
    ATTRIBUTES,
    CLASSES,
    GRADES,
    TARGETS,
    generate,
    generate_attributes,
    generate_grades,
)
from pipeline.ingest.synthetic_photos import face_in_scene

AFFECT_FILE = "train_affect.csv"
GRADE_TABLE = "train.csv"  # the ordinal competition's label table: id_code, diagnosis (APTOS 2019's spelling)
ATTRIBUTE_TABLE = "train_labels.csv"  # the multi-label competition's: image_name, tags (Planet's spelling)
PHOTO_SEED_OFFSET = 11  # the scenes draw from their own generator: the faces are those drawn without photos


def write_competition(config: SyntheticConfig, out_dir: Path) -> None:
    """Write `competition/` and `answers.csv`, `train_truth.csv` beside it, as `synthetic.task` asks."""
    if config.task == "ordinal":
        write_graded_competition(config, out_dir)
    elif config.task == "multi_label":
        write_attribute_competition(config, out_dir)
    else:
        write_expression_competition(config, out_dir)


def drawn(generator, config: SyntheticConfig) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, list[np.ndarray]]:
    """What `generator` (pipeline/ingest/synthetic.py) draws; with synthetic.photos, each face in a photo scene.
    A repeated train face is the same array: it gets the same scene, so repeats stay pixel-identical."""
    train, train_images, answers, test_images = generator(config)
    if not config.photos:
        return train, train_images, answers, test_images
    rng = np.random.default_rng(config.seed + PHOTO_SEED_OFFSET)
    scenes: dict[int, np.ndarray] = {}
    for face in train_images + test_images:
        if id(face) not in scenes:
            scenes[id(face)] = face_in_scene(rng, face)
    return train, [scenes[id(f)] for f in train_images], answers, [scenes[id(f)] for f in test_images]


def write_graded_competition(config: SyntheticConfig, out_dir: Path) -> None:
    """`competition/`: train_images/*.png, test_images/*.png, train.csv (id_code, diagnosis), sample_submission.csv."""
    train, train_images, answers, test_images = drawn(generate_grades, config)
    ids = _shuffled(answers["id"].to_numpy(), config)
    table = train[["id", "label"]].set_axis(["id_code", "diagnosis"], axis=1)
    sample = pd.DataFrame({"id_code": ids, "diagnosis": GRADES[0]})
    _write_table_layout(out_dir, (train, train_images, answers, test_images), GRADE_TABLE, table, sample)
    print(f"synthesize: wrote {len(train)} graded train and {len(answers)} test faces to {out_dir}/competition")


def write_attribute_competition(config: SyntheticConfig, out_dir: Path) -> None:
    """`competition/`: train_images/*.png, test_images/*.png, train_labels.csv (image_name, tags: attributes
    separated by spaces) and sample_submission.csv (image_name, tags; or, in the probability form, image_name and
    one 0/1 column per attribute)."""
    train, train_images, answers, test_images = drawn(generate_attributes, config)
    ids = _shuffled(answers["id"].to_numpy(), config)
    table = train[["id", "label"]].set_axis(["image_name", "tags"], axis=1)
    if config.submission_form == PROBABILITY_FORM:
        sample = pd.DataFrame({"image_name": ids, **{name: 0 for name in ATTRIBUTES}})
    else:
        sample = pd.DataFrame({"image_name": ids, "tags": " ".join(ATTRIBUTES[:2])})
    _write_table_layout(out_dir, (train, train_images, answers, test_images), ATTRIBUTE_TABLE, table, sample)
    print(f"synthesize: wrote {len(train)} multi-label train and {len(answers)} test faces to {out_dir}/competition")


def _write_table_layout(
    out_dir: Path, generated: tuple, table_name: str, table: pd.DataFrame, sample: pd.DataFrame
) -> None:
    """A label-table competition: the images in train_images/ and test_images/, the label table, the sample, and
    the answers and true train labels beside `competition/`. `generated`: what pipeline/ingest/synthetic.py drew."""
    train, train_images, answers, test_images = generated
    with atomic_dir(out_dir) as tmp:
        competition = tmp / "competition"
        for row, image in zip(train.itertuples(), train_images):
            _write_png(competition / "train_images" / f"{row.id}.png", image)
        for row, image in zip(answers.itertuples(), test_images):
            _write_png(competition / "test_images" / f"{row.id}.png", image)
        write_csv(table, competition / table_name)
        write_csv(sample, competition / "sample_submission.csv")
        write_csv(answers, tmp / "answers.csv")
        write_csv(train, tmp / "train_truth.csv")


def write_expression_competition(config: SyntheticConfig, out_dir: Path) -> None:
    """`competition/`: train/<class>/*.png, test/*.png, sample_submission.csv and train_affect.csv."""
    train, train_images, answers, test_images = drawn(generate, config)
    with atomic_dir(out_dir) as tmp:
        competition = tmp / "competition"
        for row, image in zip(train.itertuples(), train_images):
            _write_png(competition / "train" / row.label / f"{row.id}.png", image)
        for row, image in zip(answers.itertuples(), test_images):
            _write_png(competition / "test" / f"{row.id}.png", image)
        write_csv(sample_submission(answers["id"].to_numpy(), config), competition / "sample_submission.csv")
        affect = pd.DataFrame(
            {
                "id": [f"train/{row.label}/{row.id}.png" for row in train.itertuples()],
                **{name: train[name] for name in TARGETS},
            }
        )
        write_csv(affect, competition / AFFECT_FILE)
        write_csv(answers, tmp / "answers.csv")
        write_csv(train, tmp / "train_truth.csv")
    print(
        f"synthesize: wrote {len(train)} train and {len(answers)} test faces to {out_dir}/competition, answers in "
        f"{out_dir}/answers.csv"
    )


def sample_submission(test_ids: np.ndarray, config: SyntheticConfig) -> pd.DataFrame:
    """Kaggle's sample lists the ids in its own order with a placeholder label, or an equal probability per class."""
    ids = _shuffled(test_ids, config)
    if config.submission_form == PROBABILITY_FORM:
        return pd.DataFrame({"id": ids, **{name: 1 / len(CLASSES) for name in CLASSES}})
    return pd.DataFrame({"id": ids, "label": CLASSES[-1]})


def _shuffled(test_ids: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    return test_ids[np.random.default_rng(config.seed + 1).permutation(len(test_ids))]


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline synthesize", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the competition into")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    write_competition(load_config(args.params).synthetic, args.out)
