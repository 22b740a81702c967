import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import DataConfig
from pipeline.data import load_prepared
from pipeline.stages.prepare import SourceError, prepare


def copy_competition(competition: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(competition / "competition", tmp_path / "comp"))


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def test_prepared_arrays_match_the_source_images_and_sample_order(competition, prepared):
    data = load_prepared(prepared)
    sample = pd.read_csv(competition / "competition" / "sample_submission.csv", dtype=str)
    assert list(data.test_ids) == list(sample["id"])
    first = np.asarray(Image.open(competition / "competition" / "test" / f"{sample['id'][0]}.png"))
    assert np.array_equal(data.test_images[0], first)
    assert data.train_images.dtype == np.uint8 and data.train_images.shape[1:] == (48, 48)
    assert data.classes == sorted(data.classes)
    label, stem = data.train_ids[5].split("/")
    assert data.classes[data.train_labels[5]] == label
    assert np.array_equal(data.train_images[5], np.asarray(Image.open(competition / "competition" / "train" / label / f"{stem}.png")))


def test_zip_with_a_top_folder_gives_the_same_dataset_as_the_folder(competition, prepared, tmp_path):
    archive = zip_folder(competition / "competition", tmp_path / "comp.zip", prefix="my-competition/")
    prepare(archive, DataConfig(), tmp_path / "from_zip")
    a, b = load_prepared(prepared), load_prepared(tmp_path / "from_zip")
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)
    assert list(a.train_ids) == list(b.train_ids)


def test_resize_and_rgb_channels(competition, tmp_path):
    prepare(competition / "competition", DataConfig(image_size=32, channels=3), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.train_images.shape[1:] == (32, 32, 3) and data.channels == 3


def test_drop_and_merge_classes(competition, tmp_path):
    prepare(competition / "competition", DataConfig(drop_classes=("disgust",), merge_classes={"fear": "surprise"}), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.classes == ["angry", "happy", "neutral", "sad", "surprise"]


def test_unknown_class_in_params_is_named(competition, tmp_path):
    with pytest.raises(SourceError, match="'contempt'"):
        prepare(competition / "competition", DataConfig(drop_classes=("contempt",)), tmp_path / "out")


def test_corrupt_image_is_named_and_nothing_is_written(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    bad = sorted((comp / "train" / "happy").iterdir())[0]
    bad.write_bytes(b"not an image at all")
    with pytest.raises(SourceError, match=bad.name):
        prepare(comp, DataConfig(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unexpected_image_mode_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    bad = sorted((comp / "train" / "sad").iterdir())[0]
    Image.new("CMYK", (48, 48)).save(bad, format="JPEG")
    with pytest.raises(SourceError, match=rf"{bad.name}.*mode 'CMYK'"):
        prepare(comp, DataConfig(), tmp_path / "out")


def test_empty_class_folder_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    for image in (comp / "train" / "fear").iterdir():
        image.unlink()
    (comp / "train" / "fear" / "notes.txt").write_text("empty")
    with pytest.raises(SourceError, match="fear.*no .jpg/.png"):
        prepare(comp, DataConfig(), tmp_path / "out")


def test_test_image_missing_from_sample_submission(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(comp / "test" / "extra123.png")
    with pytest.raises(SourceError, match="extra123.*not listed in sample_submission.csv"):
        prepare(comp, DataConfig(), tmp_path / "out")


def test_sample_submission_id_without_image(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    (comp / "test" / f"{sample['id'][3]}.png").unlink()
    with pytest.raises(SourceError, match=f"id '{sample['id'][3]}' has no image"):
        prepare(comp, DataConfig(), tmp_path / "out")


def test_missing_source_says_what_to_point_at(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        prepare(tmp_path / "nope.zip", DataConfig(), tmp_path / "out")
