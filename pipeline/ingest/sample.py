"""The sample submission, and the test images its ids name.

Its first column holds the ids: the test file names with or without their extension (`0.jpg` or `0`),
or row numbers for a pixel table; its order is the order the prepared test set and every submission
keep. The columns after it give the submission's form: one label column (id,label: the label form),
one probability column per class, named by the class (id,c0,c1,...: the probability form), or for two
classes one column of fractions, the probability of the second class in sorted order (the binary form).
"""

from __future__ import annotations

import csv
import io
from pathlib import PurePosixPath

import pandas as pd

from pipeline.data import LABEL_FORM, PROBABILITY_FORM, split_labels, submission_form
from pipeline.ingest.sources import SUFFIX_LIST, CompetitionFiles, SourceError, is_image

TEST_FOLDERS = ("test", "test_images", "test_kaggle")  # where competitions put test images, preferred in this order


def parse_sample(data: bytes, where: str) -> pd.DataFrame:
    """The sample as text columns (id, then a label or one probability column per class), in file order, under
    their own header."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        rows = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{where}: not a UTF-8 CSV file ({error}); download it again") from error
    if not rows:
        raise SourceError(
            f"{where}: the file is empty; expected a header id,label and one row per test image; download it again"
        )
    width = len(rows[0][1])
    if width < 2:
        raise SourceError(
            f"{where}: its header {rows[0][1]} has one column; expected id,label or id and one probability column "
            "per class"
        )
    for line, row in rows:
        if len(row) != width:
            raise SourceError(f"{where}: line {line} has {len(row)} cells, the header {width}: {row[:4]}")
    if len(rows) == 1:
        raise SourceError(f"{where}: lists no test ids, only the header {rows[0][1]}; download it again")
    sample = pd.DataFrame([row for _, row in rows[1:]], columns=rows[0][1], dtype=str)
    duplicated = sample.iloc[:, 0][sample.iloc[:, 0].duplicated()]
    if len(duplicated):
        raise SourceError(f"{where}: id {duplicated.iloc[0]!r} appears more than once")
    return sample


def class_spellings(sample: pd.DataFrame, multi_label: bool = False) -> list[str]:
    """How the sample writes classes: its labels (label form; multi-label: the classes its cells list), its
    probability columns' names (probability form), or not at all (binary form: one probability)."""
    form = submission_form(sample)
    if form == LABEL_FORM and multi_label:
        return sorted({name for cell in sample.iloc[:, 1] for name in split_labels(cell)})
    if form == LABEL_FORM:
        return sorted(set(sample.iloc[:, 1].str.strip()))
    return [str(column).strip() for column in sample.columns[1:]] if form == PROBABILITY_FORM else []


def find_test_folder(files: CompetitionFiles, train_folders: set[str], named: str | None) -> str:
    """`named` (data.test_folder), else the one top-level folder besides the train images' that holds images."""
    if named is not None:
        if not any(files.images_under(named)):
            raise SourceError(
                f"{files.where(named + '/')}: data.test_folder holds no images ({SUFFIX_LIST}); {files.inventory()}"
            )
        return named
    with_images = sorted(set(files.image_folders()) - train_folders)
    if len(with_images) == 1:
        return with_images[0]
    preferred = [name for name in TEST_FOLDERS if name in with_images]
    if len(preferred) == 1:
        return preferred[0]
    found = ", ".join(f"{name}/" for name in with_images) or f"none besides {', '.join(sorted(train_folders))}/"
    raise SourceError(
        f"{files.where('')}: cannot tell which folder holds the test images (folders with images: {found}); "
        f"set data.test_folder, or keep only the test images' folder (one of {', '.join(TEST_FOLDERS)})"
    )


def match_test_files(files: CompetitionFiles, sample: pd.DataFrame, sample_name: str, folder: str) -> pd.DataFrame:
    """id, file of each sample row, in sample order."""
    ids = sample.iloc[:, 0]
    test_files = _test_files_by_id(files, ids, list(files.images_under(folder)))
    _check_same_ids(files, ids, test_files, folder, sample_name)
    return pd.DataFrame({"id": ids.to_numpy(), "file": [test_files[i] for i in ids]})


def _test_files_by_id(files: CompetitionFiles, sample_ids: pd.Series, paths: list[PurePosixPath]) -> dict[str, str]:
    """Test files keyed the way the sample spells ids: file names with their extension (`0.jpg`)
    when that matches more of its ids, else file stems (`0`)."""
    by_name = {p.name: p for p in paths}
    by_stem_matches = sample_ids.isin({p.stem for p in paths}).sum()
    use_names = sample_ids.isin(by_name.keys()).sum() > by_stem_matches
    keys = _as_sample_spells(sample_ids, [p.name if use_names else p.stem for p in paths])
    refuse_duplicate_ids(files, keys, paths, "test id (file name)" if use_names else "test id (file stem)")
    return {key: str(path) for key, path in zip(keys, paths)}


def _as_sample_spells(sample_ids: pd.Series, keys: list[str]) -> list[str]:
    """File keys respelled as the sample spells them where they differ only in letter case (`b.JPG` for
    id `b.jpg`), as downloads made on case-insensitive file systems do; never where that is ambiguous."""
    listed = set(sample_ids)
    unlisted = [key for key in keys if key not in listed]
    if not unlisted:
        return keys
    ids_by_fold: dict[str, list[str]] = {}
    for id_ in listed:
        ids_by_fold.setdefault(id_.casefold(), []).append(id_)
    keys_by_fold: dict[str, int] = {}
    for key in keys:
        keys_by_fold[key.casefold()] = keys_by_fold.get(key.casefold(), 0) + 1

    def respelled(key: str) -> str:
        ids = ids_by_fold.get(key.casefold(), [])
        unique = len(ids) == 1 and keys_by_fold[key.casefold()] == 1
        return ids[0] if key not in listed and unique else key

    return [respelled(key) for key in keys]


def refuse_duplicate_ids(files: CompetitionFiles, ids: list[str], paths: list, what: str) -> None:
    first: dict[str, object] = {}
    for id_, path in zip(ids, paths):
        if id_ in first:
            raise SourceError(
                f"{files.where(str(first[id_]))} and {files.where(str(path))}: both give the {what} "
                f"{id_!r}; remove one of them"
            )
        first[id_] = path


def _check_same_ids(
    files: CompetitionFiles, sample_ids: pd.Series, test_files: dict[str, str], folder: str, sample_name: str
) -> None:
    if test_files and not sample_ids.isin(test_files.keys()).any():  # spelled another way: nothing is missing
        raise SourceError(
            f"{files.where(sample_name)}: none of its ids names a file in {folder}/ (ids look like "
            f"{sample_ids.iloc[:2].tolist()}, files like {sorted(test_files)[:2]}); its first column must hold the "
            "test "
            "file names, with or without their extension (or set data.test_folder to the folder they name)"
        )
    not_in_sample = sorted(set(test_files) - set(sample_ids))
    if not_in_sample:
        raise SourceError(
            f"{files.where(test_files[not_in_sample[0]])}: test image not listed in {sample_name} "
            f"({len(not_in_sample)} such, e.g. {not_in_sample[:3]}); add its id or remove the image"
        )
    no_image = [i for i in sample_ids if i not in test_files]
    if not no_image:
        return
    wanted = set(no_image)
    unsupported = [p for p in files.files_under(folder) if (p.stem in wanted or p.name in wanted) and not is_image(p)]
    if unsupported:
        suffix = unsupported[0].suffix
        raise SourceError(
            f"{files.where(str(unsupported[0]))}: {f'suffix {suffix!r}' if suffix else 'a file without a suffix'} "
            f"is not a supported image format ({len(unsupported)} such test files); convert them to one of "
            f"{SUFFIX_LIST}"
        )
    raise SourceError(
        f"{files.where(sample_name)}: id {no_image[0]!r} has no image in {folder}/ "
        f"({len(no_image)} such); the download is incomplete: fetch it again"
    )
