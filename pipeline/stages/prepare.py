"""Stage `prepare`: a competition download → the prepared dataset (see pipeline/data.py).

Every image is decoded exactly once, here; later stages read uint8 arrays. The source is a Kaggle
image competition, as a .zip or a folder: train/<class>/<image>; the test images in the one other
folder that holds images (test/, test_images/, test_kaggle/, ...); sample_submission.csv with two
columns of any name (id, label), whose ids are the test file names with or without their extension.
Train ids are <class>/<file stem>; test ids are spelled as the sample spells them.
"""

from __future__ import annotations

import argparse
import csv
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.config import DataConfig, PipelineError, load_config
from pipeline.files import atomic_dir, fingerprint, save_array, write_csv, write_json
from pipeline.images import IMAGE_SUFFIXES, to_model_input

SUFFIX_LIST = " ".join(sorted(IMAGE_SUFFIXES))
TEST_FOLDERS = ("test", "test_images", "test_kaggle")  # where competitions put test images, preferred in this order
SUPPORTED_MODES = {"L", "RGB", "P", "LA", "RGBA"}  # what converts to gray/RGB without guessing


class SourceError(PipelineError):
    """The competition files are not usable; the message names the file and the fix."""


class CompetitionFiles:
    """Read access to a competition's files, the same for a .zip and a folder."""

    def __init__(self, source: str | Path):
        self.source = Path(source)
        if not self.source.exists():
            raise SourceError(f"data.source {str(source)!r} does not exist; point it at a competition .zip or folder")
        self._zip = _open_zip(self.source) if self.source.is_file() else None
        # Folders end in "/", as a .zip's directory entries do: an empty class folder shows only that way.
        entries = self._zip.namelist() if self._zip else [
            p.relative_to(self.source).as_posix() + ("/" if p.is_dir() else "")
            for p in self.source.rglob("*") if p.is_file() or p.is_dir()
        ]
        entries = [n for n in entries if not _is_system_entry(n)]
        samples = sorted((n for n in entries if PurePosixPath(n).name == "sample_submission.csv"), key=len)
        if not samples:
            raise SourceError(f"{self.source}: no sample_submission.csv found; is this a Kaggle image competition?")
        root = str(PurePosixPath(samples[0]).parent)
        self.prefix = "" if root == "." else root + "/"
        inside = [n[len(self.prefix):] for n in entries if n.startswith(self.prefix) and len(n) > len(self.prefix)]
        self.names = [n for n in inside if not n.endswith("/")]  # files
        self.folders = [n.rstrip("/") for n in inside if n.endswith("/")]

    def read(self, name: str) -> bytes:
        full = self.prefix + name
        try:
            return self._zip.read(full) if self._zip else (self.source / full).read_bytes()
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            # A damaged member, or one this Python cannot unpack (Deflate64, encryption).
            raise SourceError(f"{self.where(name)}: cannot read it from the .zip ({error}); download the .zip again, "
                              "or unzip it with another tool and point data.source at the folder") from error
        except OSError as error:
            raise SourceError(f"{self.where(name)}: cannot read the file ({error}); check it exists and is readable") from error

    def where(self, name: str) -> str:
        return f"{self.source}:{self.prefix}{name}" if self._zip else str(self.source / self.prefix / name)

    def files_under(self, folder: str) -> Iterator[PurePosixPath]:
        for name in sorted(self.names):
            path = PurePosixPath(name)
            if path.parts[0] == folder:
                yield path

    def images_under(self, folder: str) -> Iterator[PurePosixPath]:
        return (path for path in self.files_under(folder) if is_image(path))


def _is_system_entry(name: str) -> bool:
    """Hidden files and folders (.DS_Store, .ipynb_checkpoints/) and macOS zip metadata are never competition data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def is_image(path: PurePosixPath) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError(f"{source}: not a readable .zip ({error}); point data.source at the competition .zip "
                          "(download it again if it is cut short) or at its unzipped folder") from error


@dataclass(frozen=True)
class Competition:
    train: pd.DataFrame  # id, label, file
    test: pd.DataFrame  # id, file, in sample_submission order
    sample_submission: bytes


def read_competition(files: CompetitionFiles) -> Competition:
    train_paths = list(files.images_under("train"))
    _check_class_folders(files, train_paths)
    train_ids = [f"{p.parts[1]}/{p.stem}" for p in train_paths]
    _refuse_duplicate_ids(files, train_ids, train_paths, "train image id (<class>/<file stem>)")
    train = pd.DataFrame({
        "id": train_ids,
        "label": [p.parts[1] for p in train_paths],
        "file": [str(p) for p in train_paths],
    })

    sample_bytes = files.read("sample_submission.csv")
    sample_ids = read_sample_ids(sample_bytes, files.where("sample_submission.csv"))
    folder = find_test_folder(files)
    test_paths = list(files.images_under(folder))
    test_files = test_files_by_id(files, sample_ids, test_paths)
    _check_same_ids(files, sample_ids, test_files, folder)
    test = pd.DataFrame({"id": sample_ids.to_numpy(), "file": [test_files[i] for i in sample_ids]})
    return Competition(train=train, test=test, sample_submission=sample_bytes)


def find_test_folder(files: CompetitionFiles) -> str:
    """The one top-level folder besides train/ that holds images: test/, test_images/, test_kaggle/, ..."""
    with_images = sorted({p.parts[0] for p in map(PurePosixPath, files.names) if len(p.parts) > 1 and is_image(p)} - {"train"})
    if len(with_images) == 1:
        return with_images[0]
    preferred = [name for name in TEST_FOLDERS if name in with_images]
    if len(preferred) == 1:
        return preferred[0]
    found = ", ".join(f"{name}/" for name in with_images) or "none besides train/"
    raise SourceError(f"{files.where('')}: cannot tell which folder holds the test images (folders with images: {found}); "
                      f"keep only the test images' folder beside train/ (one of {', '.join(TEST_FOLDERS)})")


def test_files_by_id(files: CompetitionFiles, sample_ids: pd.Series, paths: list[PurePosixPath]) -> dict[str, str]:
    """Test files keyed the way the sample submission spells ids: file names with their extension
    (`0.jpg`) when that matches more of its ids, else file stems (`0`)."""
    by_name = {p.name: p for p in paths}
    by_stem_matches = sample_ids.isin({p.stem for p in paths}).sum()
    use_names = sample_ids.isin(by_name.keys()).sum() > by_stem_matches
    keys = [p.name if use_names else p.stem for p in paths]
    _refuse_duplicate_ids(files, keys, paths, "test id (file name)" if use_names else "test id (file stem)")
    return {key: str(path) for key, path in zip(keys, paths)}


def _check_class_folders(files: CompetitionFiles, train_paths: list[PurePosixPath]) -> None:
    """Every train/<class>/ folder, empty ones included, must hold images: a class without them would vanish."""
    folders = [PurePosixPath(n).parent for n in files.names] + [PurePosixPath(n) for n in files.folders]
    class_dirs = sorted({p.parts[1] for p in folders if len(p.parts) >= 2 and p.parts[0] == "train"})
    if not class_dirs:
        raise SourceError(f"{files.where('train/')}: no train/<class>/ folders found")
    stray = [p for p in train_paths if len(p.parts) < 3]
    if stray:  # its "class" would be its own file name
        raise SourceError(f"{files.where(str(stray[0]))}: image outside any class folder ({len(stray)} such); "
                          "move it into train/<class>/ or remove it")
    with_images = {p.parts[1] for p in train_paths}
    for name in class_dirs:
        if name not in with_images:
            others = [p.name for p in files.files_under("train") if len(p.parts) >= 3 and p.parts[1] == name]
            found = f" (only {len(others)} other files, e.g. {others[0]!r})" if others else ""
            raise SourceError(f"{files.where(f'train/{name}/')}: class folder holds no images{found}; "
                              f"add images ({SUFFIX_LIST}) or remove the folder")


def _refuse_duplicate_ids(files: CompetitionFiles, ids: list[str], paths: list[PurePosixPath], what: str) -> None:
    first: dict[str, PurePosixPath] = {}
    for id_, path in zip(ids, paths):
        if id_ in first:
            raise SourceError(f"{files.where(str(first[id_]))} and {files.where(str(path))}: both give the {what} "
                              f"{id_!r}; remove one of them")
        first[id_] = path


def read_sample_ids(data: bytes, where: str) -> pd.Series:
    """The id column of sample_submission.csv (id,label), as text, in file order."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        rows = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{where}: not a UTF-8 CSV file ({error}); download it again") from error
    if not rows:
        raise SourceError(f"{where}: the file is empty; expected a header id,label and one row per test image; download it again")
    for line, row in rows:
        if len(row) != 2:
            raise SourceError(f"{where}: expected two columns (id,label), got {len(row)} on line {line}: {row[:4]}")
    if len(rows) == 1:
        raise SourceError(f"{where}: lists no test ids, only the header {rows[0][1]}; download it again")
    return pd.Series([row[0] for _, row in rows[1:]], dtype=str)


def _check_same_ids(files: CompetitionFiles, sample_ids: pd.Series, test_files: dict[str, str], folder: str) -> None:
    duplicated = sample_ids[sample_ids.duplicated()]
    if len(duplicated):
        raise SourceError(f"{files.where('sample_submission.csv')}: id {duplicated.iloc[0]!r} appears more than once")
    if test_files and not sample_ids.isin(test_files.keys()).any():  # spelled another way: nothing is missing
        raise SourceError(
            f"{files.where('sample_submission.csv')}: none of its ids names a file in {folder}/ (ids look like "
            f"{sample_ids.iloc[:2].tolist()}, files like {sorted(test_files)[:2]}); its first column must hold the test "
            "file names, with or without their extension")
    not_in_sample = sorted(set(test_files) - set(sample_ids))
    if not_in_sample:
        raise SourceError(
            f"{files.where(test_files[not_in_sample[0]])}: test image not listed in sample_submission.csv "
            f"({len(not_in_sample)} such, e.g. {not_in_sample[:3]}); add its id or remove the image")
    no_image = [i for i in sample_ids if i not in test_files]
    if not no_image:
        return
    wanted = set(no_image)
    unsupported = [p for p in files.files_under(folder) if (p.stem in wanted or p.name in wanted) and not is_image(p)]
    if unsupported:
        suffix = unsupported[0].suffix
        raise SourceError(
            f"{files.where(str(unsupported[0]))}: {f'suffix {suffix!r}' if suffix else 'a file without a suffix'} "
            f"is not a supported image format ({len(unsupported)} such test files); convert them to one of {SUFFIX_LIST}")
    raise SourceError(
        f"{files.where('sample_submission.csv')}: id {no_image[0]!r} has no image in {folder}/ "
        f"({len(no_image)} such); the download is incomplete: fetch it again")


def decode_image(data: bytes, where: str, size: int, channels: int) -> np.ndarray:
    """One image file → uint8 array size×size (×channels when channels > 1)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as error:
        width, height = _pixel_size(data)
        raise SourceError(f"{where}: image is {width}×{height} pixels, more than Pillow decodes "
                          f"({2 * Image.MAX_IMAGE_PIXELS} pixels at most); shrink the image or remove it") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # Pillow reports a damaged header or a truncated file with any of these, depending on the format.
        raise SourceError(f"{where}: cannot decode image ({error}); replace or delete the file") from error
    if image.mode not in SUPPORTED_MODES:
        raise SourceError(f"{where}: image mode {image.mode!r} is not supported (expected one of {sorted(SUPPORTED_MODES)}); convert it to 8-bit grayscale or RGB")
    return to_model_input(image, size, channels)


def _pixel_size(data: bytes) -> tuple[int, int]:
    """Width and height of an image Image.open refuses as too large: its header, read with the limit lifted."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


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
