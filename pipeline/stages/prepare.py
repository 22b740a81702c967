"""Stage `prepare`: a competition download → the prepared dataset (see pipeline/data.py).

Every image is decoded exactly once, here; later stages read uint8 arrays. The source is a Kaggle
image competition, as a .zip or a folder: train/<class>/*.{jpg,png}, test/<id>.{jpg,png},
sample_submission.csv (id,label).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.config import DataConfig, PipelineError, load_config
from pipeline.files import atomic_dir, fingerprint, save_array, write_csv, write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SUPPORTED_MODES = {"L", "RGB", "P", "LA", "RGBA"}  # what converts to gray/RGB without guessing


class SourceError(PipelineError):
    """The competition files are not usable; the message names the file and the fix."""


class CompetitionFiles:
    """Read access to a competition's files, the same for a .zip and a folder."""

    def __init__(self, source: str | Path):
        self.source = Path(source)
        if not self.source.exists():
            raise SourceError(f"data.source {str(source)!r} does not exist; point it at a competition .zip or folder")
        self._zip = zipfile.ZipFile(self.source) if self.source.is_file() else None
        names = self._zip.namelist() if self._zip else [
            p.relative_to(self.source).as_posix() for p in self.source.rglob("*") if p.is_file()
        ]
        samples = sorted((n for n in names if PurePosixPath(n).name == "sample_submission.csv"), key=len)
        if not samples:
            raise SourceError(f"{self.source}: no sample_submission.csv found; is this a Kaggle image competition?")
        root = str(PurePosixPath(samples[0]).parent)
        self.prefix = "" if root == "." else root + "/"
        self.names = [n[len(self.prefix):] for n in names if n.startswith(self.prefix)]

    def read(self, name: str) -> bytes:
        full = self.prefix + name
        return self._zip.read(full) if self._zip else (self.source / full).read_bytes()

    def where(self, name: str) -> str:
        return f"{self.source}:{self.prefix}{name}" if self._zip else str(self.source / self.prefix / name)

    def images_under(self, folder: str) -> Iterator[PurePosixPath]:
        for name in sorted(self.names):
            path = PurePosixPath(name)
            if path.parts[0] == folder and path.suffix.lower() in IMAGE_SUFFIXES:
                yield path


@dataclass(frozen=True)
class Competition:
    train: pd.DataFrame  # id, label, file
    test: pd.DataFrame  # id, file, in sample_submission order
    sample_submission: bytes


def read_competition(files: CompetitionFiles) -> Competition:
    class_dirs = sorted({p.parts[1] for p in (PurePosixPath(n) for n in files.names) if len(p.parts) >= 3 and p.parts[0] == "train"})
    if not class_dirs:
        raise SourceError(f"{files.where('train/')}: no train/<class>/ folders found")
    train_paths = list(files.images_under("train"))
    counts = pd.Series([p.parts[1] for p in train_paths]).value_counts()
    for name in class_dirs:
        if counts.get(name, 0) == 0:
            raise SourceError(f"{files.where(f'train/{name}/')}: class folder holds no .jpg/.png images; add images or remove the folder")
    train = pd.DataFrame({
        "id": [f"{p.parts[1]}/{p.stem}" for p in train_paths],
        "label": [p.parts[1] for p in train_paths],
        "file": [str(p) for p in train_paths],
    })

    sample_bytes = files.read("sample_submission.csv")
    sample = pd.read_csv(io.BytesIO(sample_bytes), dtype=str, keep_default_na=False)
    if sample.shape[1] != 2:
        raise SourceError(f"{files.where('sample_submission.csv')}: expected two columns (id,label), got {list(sample.columns)}")
    test_files = {p.stem: str(p) for p in files.images_under("test")}
    sample_ids = sample.iloc[:, 0]
    _check_same_ids(files, sample_ids, test_files)
    test = pd.DataFrame({"id": sample_ids.to_numpy(), "file": [test_files[i] for i in sample_ids]})
    return Competition(train=train, test=test, sample_submission=sample_bytes)


def _check_same_ids(files: CompetitionFiles, sample_ids: pd.Series, test_files: dict[str, str]) -> None:
    duplicated = sample_ids[sample_ids.duplicated()]
    if len(duplicated):
        raise SourceError(f"{files.where('sample_submission.csv')}: id {duplicated.iloc[0]!r} appears more than once")
    not_in_sample = sorted(set(test_files) - set(sample_ids))
    if not_in_sample:
        raise SourceError(
            f"{files.where(test_files[not_in_sample[0]])}: test image not listed in sample_submission.csv "
            f"({len(not_in_sample)} such, e.g. {not_in_sample[:3]}); add its id or remove the image")
    no_image = [i for i in sample_ids if i not in test_files]
    if no_image:
        raise SourceError(
            f"{files.where('sample_submission.csv')}: id {no_image[0]!r} has no image test/{no_image[0]}.jpg|png "
            f"({len(no_image)} such); the download is incomplete: fetch it again")


def decode_image(data: bytes, where: str, size: int, channels: int) -> np.ndarray:
    """One image file → uint8 array size×size (×channels when channels > 1)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise SourceError(f"{where}: cannot decode image ({error}); replace or delete the file") from error
    if image.mode not in SUPPORTED_MODES:
        raise SourceError(f"{where}: image mode {image.mode!r} is not supported (expected one of {sorted(SUPPORTED_MODES)}); convert it to 8-bit grayscale or RGB")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decode_all(files: CompetitionFiles, names: pd.Series, config: DataConfig) -> np.ndarray:
    shape = (config.image_size, config.image_size) + ((config.channels,) if config.channels > 1 else ())
    images = np.empty((len(names), *shape), np.uint8)
    for i, name in enumerate(names):
        images[i] = decode_image(files.read(name), files.where(name), config.image_size, config.channels)
    return images


def relabel(train: pd.DataFrame, config: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """Apply data.drop_classes and data.merge_classes; return the kept rows and the class list."""
    present = set(train["label"])
    for name in [*config.drop_classes, *config.merge_classes, *config.merge_classes.values()]:
        if name not in present:
            raise SourceError(f"params data.drop_classes/merge_classes name class {name!r}, which is not in the data (classes: {sorted(present)})")
    kept = train[~train["label"].isin(config.drop_classes)].copy()
    kept["label"] = kept["label"].replace(config.merge_classes)
    return kept, sorted(set(kept["label"]))


def prepare(source: str | Path, config: DataConfig, out_dir: Path) -> None:
    if config.channels not in (1, 3):
        raise SourceError(f"data.channels={config.channels} is not supported; use 1 (grayscale) or 3 (RGB)")
    files = CompetitionFiles(source)
    competition = read_competition(files)
    train, classes = relabel(competition.train, config)
    train_images = decode_all(files, train["file"], config)
    test_images = decode_all(files, competition.test["file"], config)
    meta = {
        "source": str(source),
        "train_images": len(train),
        "test_images": len(test_images),
        "classes": classes,
        "image_shape": list(train_images.shape[1:]),
        "pixel_mean": float(train_images.mean() / 255),
        "pixel_std": float(train_images.std() / 255),
        "fingerprint": fingerprint(train_images, test_images),
    }
    with atomic_dir(out_dir) as tmp:
        save_array(train_images, tmp / "train_images.npy")
        save_array(test_images, tmp / "test_images.npy")
        write_csv(train[["id", "label"]], tmp / "train.csv")
        write_csv(competition.test[["id"]], tmp / "test.csv")
        (tmp / "sample_submission.csv").write_bytes(competition.sample_submission)
        write_json(classes, tmp / "classes.json")
        write_json(meta, tmp / "meta.json")
    per_class = train["label"].value_counts().reindex(classes).to_dict()
    print(f"prepare: {len(train)} train images in {len(classes)} classes {per_class}, {len(test_images)} test images → {out_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline prepare", description=__doc__)
    parser.add_argument("--source", help="competition .zip or folder (default: data.source in params)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params).data
    prepare(args.source or config.source, config, args.out)
