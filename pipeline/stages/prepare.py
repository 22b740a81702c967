"""Stage `prepare`: a competition download → the prepared dataset (see pipeline/data.py).

Every image is decoded exactly once, here; later stages read uint8 arrays. The source is a Kaggle
image competition as a .zip or a folder, in any layout pipeline/ingest/layouts.py reads: class folders,
a label table or a pixel table. Label codes become class names through data.class_names, and the
submissions write each class the way the sample submission does (name or code).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import DataConfig, FoldsConfig, load_config
from pipeline.data import (
    BINARY_FORM,
    HOLDOUT_IMAGES,
    HOLDOUT_TABLE,
    NO_FACE_FILE,
    PROBABILITY_FORM,
    TARGETS_FILE,
    parse_labels,
    split_labels,
    submission_form,
)
from pipeline.evaluation.ordinal import GRADE, ORDINAL_METRICS, grade_target
from pipeline.evaluation.splits import fold_groups, holdout_mask
from pipeline.files import atomic_dir, fingerprint, pixel_mean_std, save_array, write_csv, write_json
from pipeline.ingest.decode import decode_rows
from pipeline.ingest.layouts import read_competition
from pipeline.ingest.sample import class_spellings
from pipeline.ingest.sources import CompetitionFiles, SourceError
from pipeline.ingest.target_table import read_targets

__all__ = ["SourceError", "prepare", "relabel", "submission_labels"]

SPLIT_CHUNK_BYTES = 256 << 20  # images copied at a time when the holdout is split off


def one_spelling_per_class(labels: pd.Series, sample: pd.DataFrame) -> pd.Series:
    """The train labels with one spelling per class: codes written as floats (`3.0`) as integers, and labels that
    differ only in letter case (`Angry`, `angry`) as the one the sample submission writes, else the commonest."""
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.notna().all() and (numbers == numbers.round()).all() and not labels.str.fullmatch(r"-?\d+").all():
        print(f"prepare: label codes written as {sorted(set(labels))[:3]}... are read as integers")
        labels = numbers.astype("int64").astype(str)
    in_sample = set(class_spellings(sample))
    counts = labels.value_counts()
    respelled = {}
    for _, spellings in counts.groupby(counts.index.str.casefold()):
        if len(spellings) == 1:
            continue
        sampled = [spelling for spelling in spellings.index if spelling in in_sample]
        kept = sampled[0] if len(sampled) == 1 else spellings.idxmax()
        described = ", ".join(f"{spelling!r} ({count} images)" for spelling, count in spellings.items())
        print(f"prepare: labels {described} differ only in letter case: one class, {kept!r}")
        respelled.update({spelling: kept for spelling in spellings.index if spelling != kept})
    return labels.replace(respelled) if respelled else labels


def relabel(train: pd.DataFrame, config: DataConfig) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """Name the labels (data.class_names), then apply data.drop_classes and data.merge_classes.

    Returns the kept rows, the class list, and every class name (dropped ones included) → its label as written."""
    written = sorted(set(train["label"]))
    as_written = _name_codes(written, config)
    named = train.assign(label=train["label"].map(lambda code: config.class_names.get(code, code)))
    _check_kept_names(set(named["label"]), config)
    kept = named[~named["label"].isin(config.drop_classes)].copy()
    kept["label"] = kept["label"].replace(config.merge_classes)
    return kept, _class_list(set(kept["label"])), as_written


def relabel_sets(train: pd.DataFrame, config: DataConfig) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """`relabel` for multi-label data: each label cell's classes named, dropped and merged one by one; the cell then
    lists its classes separated by single spaces. An image left with no class keeps an empty label."""
    sets = [split_labels(cell) for cell in train["label"]]
    as_written = _name_codes(sorted({code for codes in sets for code in codes}), config)
    named = [[config.class_names.get(code, code) for code in codes] for codes in sets]
    _check_kept_names({name for names in named for name in names}, config)
    kept = [
        sorted({config.merge_classes.get(name, name) for name in names if name not in config.drop_classes})
        for names in named
    ]
    classes = _class_list({name for names in kept for name in names})
    return train.assign(label=[" ".join(sorted(names, key=class_order)) for names in kept]), classes, as_written


def is_multi_label(labels: pd.Series) -> bool:
    """Whether a label table's label column lists several classes in some cell (separated by spaces or `|`)."""
    return bool(labels.map(lambda cell: len(split_labels(cell)) > 1).any())


def _name_codes(written: list[str], config: DataConfig) -> dict[str, str]:
    """Every class name → its label as written, refusing labels data.class_names leaves unnamed."""
    if config.class_names:
        unnamed = [code for code in written if code not in config.class_names]
        if unnamed:
            raise SourceError(
                f"params data.class_names names no class for label(s) {unnamed[:5]} of the data "
                f"(labels: {written[:10]}); add them, or set class_names: {{}} to keep labels as written"
            )
    return {config.class_names.get(code, code): code for code in written}


def _check_kept_names(present: set[str], config: DataConfig) -> None:
    for name in [*config.drop_classes, *config.merge_classes, *config.merge_classes.values()]:
        if name not in present:
            raise SourceError(
                f"params data.drop_classes/merge_classes name class {name!r}, which is not in the data (classes: "
                f"{sorted(present)})"
            )


def _class_list(names: set[str]) -> list[str]:
    classes = sorted(names, key=class_order)
    if len(classes) < 2:
        raise SourceError(
            f"the train images hold {len(classes)} class ({classes}) after data.drop_classes/merge_classes; "
            "a classifier needs at least 2: check the layout found (train/<class>/ folders, the label column)"
        )
    return classes


def class_order(label: str) -> tuple:
    """Classes sort by name, and whole-number codes by value (grade 10 after grade 9: the order kappa reads)."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def submission_labels(
    classes: list[str], as_written: dict[str, str], sample: pd.DataFrame, where: str, multi_label: bool = False
) -> list[str]:
    """Each class as submissions write it (a label, or its probability column's name): as the sample writes
    classes, by class name or by the data's code."""
    spelled = class_spellings(sample, multi_label)
    names, codes = set(as_written), set(as_written.values())
    probability_columns = submission_form(sample) == PROBABILITY_FORM
    what = "probability columns" if probability_columns else "labels"
    if set(spelled) <= names:
        chosen = list(classes)
    elif set(spelled) <= codes:
        chosen = [as_written[name] for name in classes]
    else:
        strangers = sorted(set(spelled) - names - codes)
        raise SourceError(
            f"{where}: its {what} {strangers[:5]} are neither class names {sorted(names)[:7]} nor the labels as the "
            f"train data writes them {sorted(codes)[:7]}, so the form submissions must take is unknown; set "
            "data.class_names to map the train labels to the sample's spelling"
        )
    if submission_form(sample) == BINARY_FORM and len(classes) != 2:
        raise SourceError(
            f"{where}: one column of probabilities (the binary form) for {len(classes)} classes {classes[:7]}; it "
            "takes two, the column being the second's probability: drop or merge classes (data.drop_classes, "
            "data.merge_classes), or check the sample"
        )
    unnamed = [label for label in chosen if label not in spelled]
    if probability_columns and unnamed:
        raise SourceError(
            f"{where}: has no probability column for class(es) {unnamed[:5]} of the train data (columns: "
            f"{spelled[:10]}); drop or merge those classes (data.drop_classes, data.merge_classes), or check the sample"
        )
    return chosen


def with_grade(
    targets: np.ndarray | None, target_names: list[str], labels: pd.Series, classes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """The regression targets with the grade (pipeline/evaluation/ordinal.py) appended."""
    if GRADE in target_names:
        raise SourceError(
            f"data.targets names {GRADE!r}, the target an ordinal metric adds itself; rename it in the data and params"
        )
    grade = grade_target(labels.map({name: i for i, name in enumerate(classes)}).to_numpy(), len(classes))
    return (grade if targets is None else np.hstack([targets, grade])), [*target_names, GRADE]


def prepare(
    source: str | Path, config: DataConfig, out_dir: Path, ordinal: bool = False, folds: FoldsConfig | None = None
) -> None:
    """`ordinal`: the classes are grades (an ordinal competition.metric), regressed as the target GRADE too.
    `folds`: the groups and seed the holdout (data.holdout_fraction) is drawn with, as the folds are."""
    if config.holdout_fraction and folds is None:
        raise ValueError("data.holdout_fraction is drawn with the folds settings: pass `folds`")
    started = time.perf_counter()
    files = CompetitionFiles(source, config.sample_submission)
    competition = read_competition(files, config)
    multi_label = competition.layout == "label_table" and is_multi_label(competition.train["label"])
    if multi_label:
        train, classes, as_written = relabel_sets(competition.train, config)
    else:
        spelled = competition.train.assign(label=one_spelling_per_class(competition.train["label"], competition.sample))
        train, classes, as_written = relabel(spelled, config)
    targets = read_targets(files, train, config.targets, config.sample_submission)
    target_names = list(config.targets) if targets is not None else []
    if ordinal:
        targets, target_names = with_grade(targets, target_names, train["label"], classes)
    size, channels, crop = config.image_size, config.channels, config.face_crop
    with atomic_dir(out_dir) as tmp:
        train_images, train_faces = decode_rows(files, train, size, channels, tmp / "train_images.npy", "train", crop)
        test_images, test_faces = decode_rows(
            files, competition.test, size, channels, tmp / "test_images.npy", "test", crop
        )
        all_train, holdout = train, np.zeros(len(train), bool)
        if config.holdout_fraction:
            holdout = draw_holdout(train, train_images, classes, multi_label, config.holdout_fraction, folds)
            del train_images
            train_images = split_off(tmp / "train_images.npy", holdout, tmp / HOLDOUT_IMAGES)
            train, targets = train[~holdout], None if targets is None else targets[~holdout]
            write_csv(all_train.loc[holdout, ["id", "label", "file"]], tmp / HOLDOUT_TABLE)
        held_images = np.load(tmp / HOLDOUT_IMAGES, mmap_mode="r") if holdout.any() else None
        mean, std = pixel_mean_std(train_images)
        meta = {
            "source": str(source),
            "layout": competition.layout,
            "train_images": len(train),
            "test_images": len(test_images),
            "classes": classes,
            "image_shape": list(train_images.shape[1:]),
            "pixel_mean": mean,
            "pixel_std": std,
            # The targets join the fingerprint only when present: data without them keeps its fingerprint.
            "fingerprint": fingerprint(
                train_images,
                test_images,
                *([] if targets is None else [targets]),
                *([] if held_images is None else [held_images]),
            ),
            "targets": target_names,
            "submission_form": submission_form(competition.sample),
            "multi_label": multi_label,
            "face_crop": crop,
        }
        if holdout.any():
            meta["holdout_images"] = int(holdout.sum())
        del train_images, test_images, held_images  # memory maps into the folder about to be renamed
        write_csv(train[["id", "label", "file"]], tmp / "train.csv")
        if targets is not None:
            save_array(targets, tmp / TARGETS_FILE)
        write_csv(competition.test[["id"]], tmp / "test.csv")
        if crop:
            write_csv(faceless(all_train, train_faces, competition.test, test_faces, holdout), tmp / NO_FACE_FILE)
        (tmp / "sample_submission.csv").write_bytes(competition.sample_submission)
        write_json(classes, tmp / "classes.json")
        write_json(
            submission_labels(classes, as_written, competition.sample, "the sample submission", multi_label),
            tmp / "submission_labels.json",
        )
        write_json(meta, tmp / "meta.json")
    seconds = time.perf_counter() - started
    if crop:
        print(no_face_message(train_faces, test_faces, out_dir))
    listed = pd.Series([name for cell in train["label"] for name in split_labels(cell)]) if multi_label else None
    per_class = (train["label"] if listed is None else listed).value_counts().reindex(classes).to_dict()
    held = f", {int(holdout.sum())} more set aside as the holdout" if holdout.any() else ""
    print(
        f"prepare: {competition.layout} layout; {len(train)} train images in {len(classes)} classes {per_class}{held}, "
        f"{len(competition.test)} test images → {out_dir} ({seconds:.1f} s, "
        f"{(len(all_train) + len(competition.test)) / seconds:.0f} images/s)"
    )


def draw_holdout(
    train: pd.DataFrame, images: np.ndarray, classes: list[str], multi_label: bool, fraction: float, folds: FoldsConfig
) -> np.ndarray:
    """Which train rows form the holdout: drawn as the folds are, with their groups (pixel twins, folds.* keys)."""
    labels = parse_labels(train["label"], classes, multi_label)
    groups, _ = fold_groups(train["file"].to_numpy(), train["id"].to_numpy(), images, folds)
    return holdout_mask(labels, groups, fraction, folds)


def split_off(images_path: Path, holdout: np.ndarray, holdout_path: Path) -> np.ndarray:
    """Move the `holdout` rows of the .npy at `images_path` into a new .npy at `holdout_path`, a chunk at a time
    (a large competition's array need not fit in memory); returns the remaining rows, memory-mapped."""
    images = np.load(images_path, mmap_mode="r")
    chunk = max(1, SPLIT_CHUNK_BYTES // max(1, images[:1].nbytes))
    kept_path = images_path.with_name("kept_" + images_path.name)
    kept = np.lib.format.open_memmap(kept_path, "w+", np.uint8, (int((~holdout).sum()), *images.shape[1:]))
    held = np.lib.format.open_memmap(holdout_path, "w+", np.uint8, (int(holdout.sum()), *images.shape[1:]))
    kept_at = held_at = 0
    for start in range(0, len(images), chunk):
        rows, mask = np.asarray(images[start : start + chunk]), holdout[start : start + chunk]
        kept[kept_at : kept_at + (~mask).sum()], held[held_at : held_at + mask.sum()] = rows[~mask], rows[mask]
        kept_at, held_at = kept_at + (~mask).sum(), held_at + mask.sum()
    kept.flush(), held.flush()
    del images, kept, held
    os.replace(kept_path, images_path)
    return np.load(images_path, mmap_mode="r")


def faceless(
    train: pd.DataFrame, train_faces: np.ndarray, test: pd.DataFrame, test_faces: np.ndarray, holdout: np.ndarray
) -> pd.DataFrame:
    """The images data.face_crop found no face in (kept whole): split (train, holdout or test), id and file."""
    train_split = np.where(holdout, "holdout", "train")
    return pd.concat(
        [
            train.loc[~train_faces, ["id", "file"]].assign(split=train_split[~train_faces]),
            test.loc[~test_faces, ["id", "file"]].assign(split="test"),
        ]
    )[["split", "id", "file"]]


def no_face_message(train_faces: np.ndarray, test_faces: np.ndarray, out_dir: Path) -> str:
    """What prepare prints of the images no face was found in."""
    counts = ", ".join(
        f"{int((~faces).sum())} of {len(faces)} {split} images"
        for split, faces in (("train", train_faces), ("test", test_faces))
    )
    return f"prepare: face crops: no face found in {counts}; kept whole, listed in {out_dir / NO_FACE_FILE}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline prepare", description=__doc__)
    parser.add_argument("--source", help="competition .zip or folder (default: data.source in params)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    ordinal = config.competition.metric in ORDINAL_METRICS
    prepare(args.source or config.data.source, config.data, args.out, ordinal, config.folds)
