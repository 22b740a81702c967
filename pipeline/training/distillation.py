"""A student's fold run learns from its labels and from what the same fold's first-round models say (Hinton et al.,
"Distilling the Knowledge in a Neural Network", 2015), and from the test images, which only the teachers label.

OOF stays honest by construction: the student of fold k reads only the probabilities of the teachers' fold-k
models, which never trained on fold k, for the train images it learns from and for the test images. Teachers of
another fold saw fold k's labels; a student taught by them would carry those labels into its own validation
fold (tests/test_distillation.py shows how far that moves OOF).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DistillConfig
from pipeline.data import Prepared, Rows, Split
from pipeline.errors import PipelineError
from pipeline.training.distill_loss import NO_LABEL


@dataclass(frozen=True)
class Teaching:
    """What fold k's teachers say, for that fold's student run."""

    train_probs: np.ndarray  # N_train × classes: the teachers' mean probabilities (fold k's own rows are NaN)
    test_probs: np.ndarray | None  # N_test × classes, the test images' only target; None: they are not trained on
    temperature: float
    label_weight: float

    @property
    def identity(self) -> str:
        """What a resumed run must match: the targets and the loss's settings."""
        digest = hashlib.sha256(f"{self.temperature}|{self.label_weight}".encode())
        for probs in (self.train_probs, self.test_probs):
            digest.update(b"|" if probs is None else np.ascontiguousarray(probs, dtype=np.float32).tobytes())
        return digest.hexdigest()

    @property
    def extra_images(self) -> int:
        return 0 if self.test_probs is None else len(self.test_probs)


# In the folder teach@<teacher> writes: its probabilities, and a copy of each fold model a student may start from.
PROBS_FILE, WEIGHTS_FILE = "probs.npz", "fold{}.safetensors"


def teachers_file(folder: Path, teacher: str) -> Path:
    return Path(folder) / teacher / PROBS_FILE


def teacher_weights(folder: Path, teacher: str, fold: int) -> Path:
    return Path(folder) / teacher / WEIGHTS_FILE.format(fold)


def read_teaching(folder: Path, settings: DistillConfig, fold: int, data: Prepared) -> Teaching:
    """Fold `fold`'s teaching: the mean over `settings.teachers` of their fold-`fold` model's probabilities,
    from the files `teach@<teacher>` wrote into `folder`."""
    train, test = [], []
    for teacher in settings.teachers:
        path = teachers_file(folder, teacher)
        if not path.exists():
            raise PipelineError(f"{path} is missing: run `dvc repro teach@{teacher}` (distill.teachers names it)")
        with np.load(path) as saved:
            if str(saved["fingerprint"]) != data.fingerprint:
                raise PipelineError(f"{path} was made from other prepared data: run `dvc repro teach@{teacher}`")
            position = np.flatnonzero(saved["folds"] == fold)
            if len(position) == 0:
                raise PipelineError(f"{path} has no fold {fold} model (folds {saved['folds'].tolist()})")
            train.append(saved["train"][position[0]].astype(np.float32))
            test.append(saved["test"][position[0]].astype(np.float32))
    return Teaching(
        train_probs=np.mean(train, axis=0),
        test_probs=np.mean(test, axis=0) if settings.pseudo_labels else None,
        temperature=settings.temperature,
        label_weight=settings.label_weight,
    )


def taught_split(data: Prepared, train_index: np.ndarray, teaching: Teaching) -> Split:
    """The images a student trains on (its fold's train images, then the test images when pseudo-labelling), their
    labels (NO_LABEL for test images) and, as the targets' last columns, the teachers' probabilities."""
    probs = teaching.train_probs[train_index]
    if np.isnan(probs).any():
        raise PipelineError("the teachers' probabilities miss train images this fold trains on: re-run `teach@`")
    labels = data.train_labels[train_index]
    values = None if data.train_targets is None else data.train_targets[train_index]
    if teaching.test_probs is None:
        images = Rows(data.train_images, train_index)
    else:
        images = np.concatenate([Rows(data.train_images, train_index)[:], np.asarray(data.test_images)])
        probs = np.concatenate([probs, teaching.test_probs])
        labels = np.concatenate([labels, np.full(len(teaching.test_probs), NO_LABEL, labels.dtype)])
        if values is not None:
            values = np.concatenate([values, np.full((len(teaching.test_probs), values.shape[1]), np.nan)])
    targets = probs.astype(np.float32) if values is None else np.hstack([values, probs]).astype(np.float32)
    return Split(images, labels, targets)
