"""Which layout a competition download has, and the class-folder and label-table readers.

- class folders: train/<class>/<image>, the test images in one other folder;
- label table: a CSV naming the train images (id, file name or path, with or without extension)
  and their labels, beside the folder of those images; the test images in one other folder;
- pixel table: see pipeline/ingest/pixel_table.py.

Detected in that order unless data.layout names one; data.train_table, data.id_column,
data.label_column, data.test_folder and data.sample_submission point at files detection cannot pick.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from pipeline.config import DataConfig
from pipeline.ingest.pixel_table import is_pixel_table, read_pixel_table
from pipeline.ingest.sample import find_test_folder, match_test_files, parse_sample, refuse_duplicate_ids
from pipeline.ingest.sources import SUFFIX_LIST, CompetitionFiles, SourceError, find_sample
from pipeline.ingest.tables import Competition, column_named, find_label_column, read_table, refuse_empty_labels

KNOWN_LAYOUTS = (
    "class folders: train/<class>/<image>, a test images folder and a *submission*.csv; "
    "label table: a CSV of image names and labels beside their images folder (data.train_table, data.id_column, "
    "data.label_column); pixel table: a CSV with a pixels column (data.train_table); data.layout forces one"
)


def read_competition(files: CompetitionFiles, config: DataConfig) -> Competition:
    sample_name = find_sample(files, config.sample_submission)
    layout = config.layout if config.layout != "auto" else detect_layout(files, config, sample_name)
    if layout == "pixel_table":
        tables = [n for n in files.csvs() if n != sample_name]
        return read_pixel_table(files, tables, config.train_table, config.label_column, sample_name)
    if sample_name is None:
        raise SourceError(
            f"{files.where('')}: no sample submission (*submission*.csv) found; {files.inventory()}; "
            "set data.sample_submission to the competition's sample file"
        )
    sample = files.read(sample_name)
    if layout == "class_folders":
        train, train_folders = read_class_folders(files), {"train"}
    else:
        train, train_folders = read_label_table(files, config, sample_name)
    folder = find_test_folder(files, train_folders, config.test_folder)
    rows = parse_sample(sample, files.where(sample_name))
    return Competition(layout, train, match_test_files(files, rows, sample_name, folder), sample, rows)


def detect_layout(files: CompetitionFiles, config: DataConfig, sample_name: str | None) -> str:
    if config.train_table is not None:
        return "pixel_table" if is_pixel_table(files, config.train_table) else "label_table"
    if has_class_folders(files):
        return "class_folders"
    tables = [n for n in files.csvs() if n != sample_name]
    if any(is_pixel_table(files, n) for n in tables):
        return "pixel_table"
    if tables and files.image_folders():
        return "label_table"
    raise SourceError(
        f"{files.where('')}: not a competition layout this pipeline reads: {files.inventory()}. "
        f"Layouts: {KNOWN_LAYOUTS}"
    )


def class_folder_names(files: CompetitionFiles) -> list[str]:
    """The folders directly under train/, empty ones included (a .zip shows those only as folder entries)."""
    entries = [*files.names, *(folder + "/" for folder in files.folders)]
    return sorted({n.split("/")[1] for n in entries if n.startswith("train/") and n.count("/") >= 2})


def has_class_folders(files: CompetitionFiles) -> bool:
    # One folder under train/ is a wrapper (train/train/, train/images/), not a one-class competition.
    return len(class_folder_names(files)) >= 2


def read_class_folders(files: CompetitionFiles) -> pd.DataFrame:
    """train/<class>/.../<image>: ids the path below train/ without its suffix, labels the class folder names."""
    paths = list(files.images_under("train"))
    _check_class_folders(files, paths)
    ids = [str(PurePosixPath(*p.parts[1:]).with_suffix("")) for p in paths]
    refuse_duplicate_ids(files, ids, paths, "train image id (<class>/<file stem>)")
    return pd.DataFrame({"id": ids, "label": [p.parts[1] for p in paths], "file": [str(p) for p in paths]})


def _check_class_folders(files: CompetitionFiles, train_paths: list[PurePosixPath]) -> None:
    """Every train/<class>/ folder, empty ones included, must hold images: a class without them would vanish."""
    class_dirs = class_folder_names(files)
    if not class_dirs:
        raise SourceError(f"{files.where('train/')}: no train/<class>/ folders found; {files.inventory()}")
    stray = [p for p in train_paths if len(p.parts) < 3]
    if stray:  # its "class" would be its own file name
        raise SourceError(
            f"{files.where(str(stray[0]))}: image outside any class folder ({len(stray)} such); "
            "move it into train/<class>/ or remove it"
        )
    with_images = {p.parts[1] for p in train_paths}
    for name in class_dirs:
        if name not in with_images:
            others = [p.name for p in files.files_under("train") if len(p.parts) >= 3 and p.parts[1] == name]
            found = f" (only {len(others)} other files, e.g. {others[0]!r})" if others else ""
            raise SourceError(
                f"{files.where(f'train/{name}/')}: class folder holds no images{found}; "
                f"add images ({SUFFIX_LIST}) or remove the folder"
            )


def read_label_table(files: CompetitionFiles, config: DataConfig, sample_name: str) -> tuple[pd.DataFrame, set[str]]:
    """The table's rows with the images they name; and the folder those images are in."""
    if config.train_table:
        name, table = config.train_table, read_table(files, config.train_table)
        match = _match_images(files, table, name, config.id_column)
    else:
        name, table, match = _find_label_table(files, sample_name, config.id_column)
    id_column, folder, image_of = match
    targets = {
        column for target in config.targets if (column := column_named(table, target))
    }  # beside the label, not it
    label_column = find_label_column(files, table, name, config.label_column, {id_column, *targets})
    refuse_empty_labels(files, table, name, label_column)
    table = one_row_per_image(files, table, name, id_column, label_column)
    ids = table[id_column]
    missing = ~ids.isin(image_of.keys())
    if missing.any():
        row = int(missing.to_numpy().argmax())
        raise SourceError(
            f"{files.where(name)}: line {row + 2}: {id_column} {ids.iloc[row]!r} names no image in {folder}/ "
            f"({int(missing.sum())} such rows); add the images or remove those rows"
        )
    train = pd.DataFrame(
        {"id": ids.to_numpy(), "label": table[label_column].str.strip().to_numpy(), "file": [image_of[i] for i in ids]}
    )
    return train, {folder}


def one_row_per_image(files: CompetitionFiles, table: pd.DataFrame, name: str, id_column: str, label_column: str):
    """The table with each image's repeated rows kept once; an image given two labels is refused."""
    repeated = table[table[id_column].duplicated(keep=False)]
    if repeated.empty:
        return table
    labels = repeated.groupby(id_column)[label_column].agg(lambda values: sorted(set(values.str.strip())))
    conflicting = labels[labels.map(len) > 1]
    if len(conflicting):
        raise SourceError(
            f"{files.where(name)}: {id_column} {conflicting.index[0]!r} is given two labels {conflicting.iloc[0]} "
            f"({len(conflicting)} such images); keep the row with the right label"
        )
    print(f"prepare: {name}: {len(repeated) - len(labels)} repeated rows of {len(labels)} images, each read once")
    return table.drop_duplicates(subset=[id_column])


def _find_label_table(
    files: CompetitionFiles, sample_name: str, id_column: str | None
) -> tuple[str, pd.DataFrame, tuple]:
    """The one CSV (besides the sample) whose column names images: its name, rows and match."""
    found, refusals = [], []
    for name in [n for n in files.csvs() if n != sample_name and len(files.csv_columns(n)) >= 2]:
        table = read_table(files, name)
        try:
            found.append((name, table, _match_images(files, table, name, id_column)))
        except SourceError as refusal:
            refusals.append(refusal)
    if not found and len(refusals) == 1:
        raise refusals[0]  # the one table there is: why its ids name no image says more than "no label table"
    if len(found) != 1:
        what = (
            f"several label tables {[name for name, _, _ in found]}"
            if found
            else "no CSV whose column names the images"
        )
        raise SourceError(f"{files.where('')}: {what}; {files.inventory()}; set data.train_table (and data.id_column)")
    return found[0]


def _shared_spelling(paths: list[PurePosixPath], spelling) -> str:
    seen: dict[str, PurePosixPath] = {}
    for path in paths:
        if spelling(path) in seen:
            return f"; {seen[spelling(path)]} and {path} share the name {spelling(path)!r}, so it is not used"
        seen[spelling(path)] = path
    return ""


# How a table may spell an image: its path, its path inside its top folder, its file name, its file stem.
SPELLINGS = (lambda p: str(p), lambda p: str(PurePosixPath(*p.parts[1:])), lambda p: p.name, lambda p: p.stem)


def _match_images(
    files: CompetitionFiles, table: pd.DataFrame, name: str, named: str | None
) -> tuple[str, str, dict[str, str]]:
    """The id column, the image folder it names, and id → image path: the column of unique values, the
    folder and the spelling of ids that name the most images. A spelling two images of one folder share
    (x.jpg and x.png by stem, a/1.png and b/1.png by name) is never used, so no id names the wrong image."""
    if named is not None and named not in table.columns:
        raise SourceError(
            f"{files.where(name)}: data.id_column {named!r} is not one of its columns {list(table.columns)}"
        )
    # A label column repeats its few values; an id column is unique but for a repeated row or two.
    columns = [named] if named else [c for c in table.columns if table[c].nunique() > len(table) // 2]
    best: tuple[int, str, str, dict[str, str]] = (0, "", "", {})
    shared = ""
    for folder in sorted(files.image_folders()):
        paths = list(files.images_under(folder))
        for spelling in SPELLINGS:
            image_of = {spelling(p): str(p) for p in paths}
            if len(image_of) < len(paths):
                shared = shared or _shared_spelling(paths, spelling)
                continue
            for column in columns:
                matched = table[column][table[column].isin(image_of.keys())].nunique()
                if matched > best[0]:
                    best = (matched, column, folder, image_of)
    if best[0] == 0:
        columns = [named] if named else list(table.columns)
        raise SourceError(
            f"{files.where(name)}: no value of columns {columns} names an image (values look like "
            f"{table.iloc[:2].to_dict('records')}{shared}); {files.inventory()}; set data.id_column to the column "
            "of image names, and spell them so that each names one image"
        )
    return best[1], best[2], best[3]
