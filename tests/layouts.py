"""A class-folder competition rewritten in the other layouts `prepare` reads, image for image.

    python -m tests.layouts data/synthetic/competition label_table /tmp/label_table.zip

writes the default synthetic competition as a label table (train.csv of codes beside
train_images/, test_images/, a sample of codes); `pixel_table` writes fer2013.csv (emotion, pixels,
Usage) as FER-2013's own download has it; `pixel_files` writes train.csv, test.csv and
sample_submission.csv of row numbers, as its Kaggle competition does; `emotion_folders` keeps the
class folders with the test images in test_kaggle/ and a sample `image_path,emotion` of file names.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.ingest.synthetic import CLASSES

CODES = {name: str(code) for code, name in enumerate(CLASSES)}  # FER-2013's emotion codes
CLASS_NAMES = {code: name for name, code in CODES.items()}  # what data.class_names maps them back with


def read_class_folders(comp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """train (stem, label, path) and the sample (id, label), in file order."""
    paths = sorted((comp / "train").glob("*/*.png"))
    train = pd.DataFrame({"stem": [p.stem for p in paths], "label": [p.parent.name for p in paths], "path": paths})
    return train, pd.read_csv(comp / "sample_submission.csv", dtype=str)


def as_label_table(comp: Path, out: Path) -> None:
    """train.csv (image_id, label code) beside train_images/<id>.png; test_images/; the sample's labels as codes."""
    train, sample = read_class_folders(comp)
    (out / "train_images").mkdir(parents=True)
    for row in train.itertuples():
        shutil.copy(row.path, out / "train_images" / f"{row.stem}.png")
    shutil.copytree(comp / "test", out / "test_images")
    pd.DataFrame({"image_id": train["stem"], "label": train["label"].map(CODES)}).to_csv(out / "train.csv", index=False)
    sample.assign(label=sample["label"].map(CODES)).to_csv(out / "sample_submission.csv", index=False)


def pixel_string(path: Path) -> str:
    return " ".join(map(str, np.asarray(Image.open(path)).ravel()))


def as_pixel_table(comp: Path, out: Path) -> pd.Series:
    """fer2013.csv: train rows (Training) then the test images in sample order (PublicTest); no sample.
    Returns the original test id of each test row number."""
    train, sample = read_class_folders(comp)
    out.mkdir(parents=True)
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "emotion": train["label"].map(CODES),
                    "pixels": [pixel_string(p) for p in train["path"]],
                    "Usage": "Training",
                }
            ),
            pd.DataFrame(
                {
                    "emotion": CODES[CLASSES[0]],
                    "pixels": [pixel_string(comp / "test" / f"{i}.png") for i in sample["id"]],
                    "Usage": "PublicTest",
                }
            ),
        ],
        ignore_index=True,
    )
    rows.to_csv(out / "fer2013.csv", index=False)
    return pd.Series(sample["id"].to_numpy(), index=[str(i) for i in range(len(train), len(rows))])


def as_pixel_files(comp: Path, out: Path) -> pd.Series:
    """train.csv (emotion, pixels), test.csv (pixels), sample_submission.csv (id = test row number, emotion),
    the sample listing the rows in another order. Returns the original test id of each test row number."""
    train, sample = read_class_folders(comp)
    out.mkdir(parents=True)
    pd.DataFrame({"emotion": train["label"].map(CODES), "pixels": [pixel_string(p) for p in train["path"]]}).to_csv(
        out / "train.csv", index=False
    )
    pd.DataFrame({"pixels": [pixel_string(comp / "test" / f"{i}.png") for i in sample["id"]]}).to_csv(
        out / "test.csv", index=False
    )
    rows = [str(i) for i in range(len(sample))]
    pd.DataFrame({"id": rows[::-1], "emotion": CODES[CLASSES[-1]]}).to_csv(out / "sample_submission.csv", index=False)
    return pd.Series(sample["id"].to_numpy(), index=rows)


def as_emotion_folders(comp: Path, out: Path) -> None:
    """Class folders as the emotion competition ships them: test images in test_kaggle/, a sample
    `image_path,emotion` naming them with their extension."""
    shutil.copytree(comp / "train", out / "train")
    shutil.copytree(comp / "test", out / "test_kaggle")
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    pd.DataFrame({"image_path": sample["id"] + ".png", "emotion": sample["label"]}).to_csv(
        out / "sample_submission.csv", index=False
    )


WRITERS = {
    "label_table": as_label_table,
    "pixel_table": as_pixel_table,
    "pixel_files": as_pixel_files,
    "emotion_folders": as_emotion_folders,
}


def zip_folder(
    folder: Path, target: Path, prefix: str = "", folders: bool = False, compression: int = zipfile.ZIP_STORED
) -> Path:
    """`folders`: also write directory entries, as `zip -r` does (the top folder's included)."""
    with zipfile.ZipFile(target, "w", compression) as archive:
        if folders and prefix:
            archive.write(folder, prefix)
        for path in sorted(folder.rglob("*")):
            if path.is_file() or folders:
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.layouts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("competition", type=Path, help="a class-folder competition folder")
    parser.add_argument("layout", choices=sorted(WRITERS))
    parser.add_argument("out", type=Path, help="the .zip to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        WRITERS[args.layout](args.competition, Path(tmp) / "comp")
        zip_folder(Path(tmp) / "comp", args.out, compression=zipfile.ZIP_DEFLATED)
    print(f"wrote {args.out} ({args.layout})")


if __name__ == "__main__":
    main()
