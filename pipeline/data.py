"""The prepared dataset: what `prepare` writes and every later stage reads.

Layout of the prepared folder:
  train_images.npy   uint8, N×H×W (grayscale) or N×H×W×C
  train.csv          id, label, file        (row i describes train_images[i]; file: where it came from; a multi-label
                     image's label: its class names separated by spaces)
  test_images.npy    uint8, in sample_submission.csv order
  test.csv           id                      (sample_submission.csv order)
  classes.json       class names; a label's index in this list is its model output
  submission_labels.json  per class, how a submission writes it (as the sample does: name or code), as a label
                     or as the name of its probability column
  meta.json's submission_form: label (id,label), probability (id and one probability column per class) or
                     binary (id and the second class's probability, for two classes)
  sample_submission.csv  the competition's own file, the template submissions must match
  meta.json          source, sizes, pixel mean/std, a content fingerprint, the regression target names and
                     multi_label (whether an image has a set of classes rather than one)
  train_targets.npy  float32, N×targets (NaN: missing); only when the data has targets
                     (read by pipeline/ingest/target_table.py)
  holdout_images.npy, holdout.csv  with data.holdout_fraction: the labelled images set aside from the train
                     arrays above (holdout.csv as train.csv), scored by every fold model as the test images are
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import MissingInputError, PipelineError
from pipeline.files import read_json

NO_FACE_FILE = "no_face.csv"  # with data.face_crop: the images no face was found in (split, id, file)
TARGETS_FILE = "train_targets.npy"
HOLDOUT_IMAGES, HOLDOUT_TABLE = "holdout_images.npy", "holdout.csv"
# The sample submission's form (meta.json submission_form): id,label; id and one probability column per class;
# or, for two classes, id and the probability of the second (Dogs vs. Cats Redux's id,label with 0.5).
LABEL_FORM, PROBABILITY_FORM, BINARY_FORM = "label", "probability", "binary"
# A multi-label cell lists its classes separated by spaces or `|` (Planet's tags, Human Protein Atlas's codes).
LABEL_SEPARATOR = re.compile(r"\s*\|\s*|\s+")


@dataclass(frozen=True)
class Prepared:
    train_images: np.ndarray
    train_ids: np.ndarray  # str ids
    train_labels: np.ndarray  # int class indices; multi-label: N×classes float32 of 0/1
    train_files: np.ndarray  # each image's file name in the source (or table:row), for grouping by name
    test_images: np.ndarray
    test_ids: np.ndarray
    classes: list[str]
    submission_labels: list[str]  # classes as the competition's submissions spell them
    submission_form: str  # LABEL_FORM, PROBABILITY_FORM or BINARY_FORM
    pixel_mean: float
    pixel_std: float
    fingerprint: str
    target_names: list[str] = field(default_factory=list)  # regression targets (valence, arousal); [] when none
    train_targets: np.ndarray | None = None  # float32 N×targets, NaN where missing; None when no targets
    multi_label: bool = False
    faceless: pd.DataFrame | None = None  # with data.face_crop: the images no face was found in (NO_FACE_FILE)
    # With data.holdout_fraction: the labelled images kept out of every fold (None: no holdout).
    holdout_images: np.ndarray | None = None
    holdout_ids: np.ndarray | None = None
    holdout_labels: np.ndarray | None = None

    @property
    def has_holdout(self) -> bool:
        return self.holdout_ids is not None and len(self.holdout_ids) > 0

    @property
    def channels(self) -> int:
        return 1 if self.train_images.ndim == 3 else self.train_images.shape[-1]


def load_prepared(folder: str | Path) -> Prepared:
    folder = Path(folder)
    if not (folder / "meta.json").exists():
        raise MissingInputError(f"{folder} holds no prepared dataset (no meta.json); run `dvc repro prepare` first")
    classes = read_json(folder / "classes.json")
    meta = read_json(folder / "meta.json")
    train = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(folder / "test.csv", dtype=str, keep_default_na=False)
    multi_label = bool(meta.get("multi_label", False))
    holdout = (
        pd.read_csv(folder / HOLDOUT_TABLE, dtype=str, keep_default_na=False)
        if (folder / HOLDOUT_TABLE).exists()
        else None
    )
    return Prepared(
        train_images=np.load(folder / "train_images.npy", mmap_mode="r"),  # read on first use only
        train_ids=train["id"].to_numpy(),
        train_labels=parse_labels(train["label"], classes, multi_label),
        train_files=train["file"].to_numpy(),
        test_images=np.load(folder / "test_images.npy", mmap_mode="r"),
        test_ids=test["id"].to_numpy(),
        classes=classes,
        submission_labels=read_json(folder / "submission_labels.json"),
        submission_form=meta["submission_form"],
        pixel_mean=meta["pixel_mean"],
        pixel_std=meta["pixel_std"],
        fingerprint=meta["fingerprint"],
        target_names=list(meta.get("targets", [])),
        train_targets=np.load(folder / TARGETS_FILE) if meta.get("targets") else None,
        multi_label=multi_label,
        faceless=pd.read_csv(folder / NO_FACE_FILE, dtype=str, keep_default_na=False)
        if meta.get("face_crop")
        else None,
        holdout_images=None if holdout is None else np.load(folder / HOLDOUT_IMAGES, mmap_mode="r"),
        holdout_ids=None if holdout is None else holdout["id"].to_numpy(),
        holdout_labels=None if holdout is None else parse_labels(holdout["label"], classes, multi_label),
    )


class Rows:
    """Rows `index` of an image array, read only when a batch asks for them: a fold of a memory-mapped
    train_images.npy trains and is scored without a copy of its images in memory (a 50,000-image 224 px RGB
    competition is 7.5 GB). Indexed by a slice or a list of positions, it returns those rows as an array; as
    an array (np.asarray) it is all of them."""

    def __init__(self, array: np.ndarray, index: np.ndarray):
        self.array, self.index = array, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return len(self.index) * self.array[:1].nbytes

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.array[rows])
        ascending = np.argsort(rows, kind="stable")  # the file read front to back, then put back in order
        found = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        found[ascending] = self.array[rows[ascending]]
        return found

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


@dataclass(frozen=True)
class Split:
    """The images (uint8) one run trains or scores on, their labels and, when the data has them, their
    regression targets (N×T float, NaN = missing)."""

    images: np.ndarray | Rows  # Rows: read batch by batch from the memory-mapped array
    labels: np.ndarray
    targets: np.ndarray | None = None


def split_labels(cell: str) -> list[str]:
    """The classes a multi-label cell lists (none for an empty cell)."""
    return [name for name in LABEL_SEPARATOR.split(cell.strip()) if name]


def parse_labels(cells: pd.Series, classes: list[str], multi_label: bool) -> np.ndarray:
    """Label cells as class indices, or for multi-label data as N×classes 0/1 rows."""
    index = {name: i for i, name in enumerate(classes)}
    if not multi_label:
        return cells.map(index).to_numpy(np.int64)
    rows = np.zeros((len(cells), len(classes)), np.float32)
    for row, cell in enumerate(cells):
        rows[row, [index[name] for name in split_labels(cell)]] = 1
    return rows


def label_cells(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class indices as class names, or 0/1 rows as their class names joined by spaces."""
    names = np.array(classes)
    if labels.ndim == 1:
        return names[labels]
    return np.array([" ".join(names[row > 0.5]) for row in labels], dtype=object)


def submission_form(sample: pd.DataFrame) -> str:
    """PROBABILITY_FORM for an id and one probability column per class; for an id and one column, BINARY_FORM when
    that column holds fractions (a probability), else LABEL_FORM."""
    if sample.shape[1] > 2:
        return PROBABILITY_FORM
    values = pd.to_numeric(sample.iloc[:, 1], errors="coerce")
    fractions = values.notna().all() and ((values >= 0) & (values <= 1)).all() and (values != values.round()).any()
    return BINARY_FORM if fractions else LABEL_FORM


def load_folds(path: str | Path, train_ids: np.ndarray) -> np.ndarray:
    """Fold number of each train image, in the prepared train order."""
    return fold_columns(path, train_ids, "fold")[0]


def fold_columns(path: str | Path, train_ids: np.ndarray, *columns: str) -> list[np.ndarray]:
    """Columns of the folds file (fold, group), each in the prepared train order."""
    folds = pd.read_csv(path, dtype={"id": str})
    absent = [column for column in columns if column not in folds.columns]
    if absent:
        raise PipelineError(f"{path} has no {absent} column (columns: {list(folds.columns)}); re-run `dvc repro folds`")
    missing = pd.Index(train_ids).difference(folds["id"])
    if len(missing) or len(folds) != len(train_ids):
        raise PipelineError(
            f"{path} does not match the prepared data ({len(missing)} ids missing, e.g. {list(missing[:3])}); re-run "
            "`dvc repro folds`"
        )
    in_order = folds.set_index("id").loc[train_ids]
    return [in_order[column].to_numpy(np.int64) for column in columns]
