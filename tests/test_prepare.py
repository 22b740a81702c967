import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import load_prepared
from pipeline.stages.prepare import SourceError, prepare
from tests.conftest import data_config
from tests.layouts import zip_folder


def copy_competition(competition: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(competition / "competition", tmp_path / "comp"))


def first_test_image(comp: Path) -> Path:
    return comp / "test" / f"{pd.read_csv(comp / 'sample_submission.csv', dtype=str)['id'][0]}.png"


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
    assert np.array_equal(
        data.train_images[5], np.asarray(Image.open(competition / "competition" / "train" / label / f"{stem}.png"))
    )


def test_zip_with_a_top_folder_gives_the_same_dataset_as_the_folder(competition, prepared, tmp_path):
    archive = zip_folder(competition / "competition", tmp_path / "comp.zip", prefix="my-competition/")
    prepare(archive, data_config(), tmp_path / "from_zip")
    a, b = load_prepared(prepared), load_prepared(tmp_path / "from_zip")
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)
    assert list(a.train_ids) == list(b.train_ids)


def test_resize_and_rgb_channels(competition, tmp_path):
    prepare(competition / "competition", data_config(image_size=32, channels=3), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.train_images.shape[1:] == (32, 32, 3) and data.channels == 3


def test_drop_and_merge_classes(competition, tmp_path):
    prepare(
        competition / "competition",
        data_config(drop_classes=("disgust",), merge_classes={"fear": "surprise"}),
        tmp_path / "out",
    )
    data = load_prepared(tmp_path / "out")
    assert data.classes == ["angry", "happy", "neutral", "sad", "surprise"]


def test_unknown_class_in_params_is_named(competition, tmp_path):
    with pytest.raises(SourceError, match="'contempt'"):
        prepare(competition / "competition", data_config(drop_classes=("contempt",)), tmp_path / "out")


def test_corrupt_image_is_named_and_nothing_is_written(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    bad = sorted((comp / "train" / "happy").iterdir())[0]
    bad.write_bytes(b"not an image at all")
    with pytest.raises(SourceError, match=bad.name):
        prepare(comp, data_config(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unexpected_image_mode_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    bad = sorted((comp / "train" / "sad").iterdir())[0]
    Image.new("CMYK", (48, 48)).save(bad, format="JPEG")
    with pytest.raises(SourceError, match=rf"{bad.name}.*mode 'CMYK'"):
        prepare(comp, data_config(), tmp_path / "out")


def test_empty_class_folder_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    for image in (comp / "train" / "fear").iterdir():
        image.unlink()
    (comp / "train" / "fear" / "notes.txt").write_text("empty")
    with pytest.raises(SourceError, match=r"fear.*holds no images \(only 1 other files, e.g. 'notes.txt'\)"):
        prepare(comp, data_config(), tmp_path / "out")


def test_class_folder_without_any_file_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    (comp / "train" / "contempt").mkdir()
    with pytest.raises(
        SourceError, match=r"train/contempt/?: class folder holds no images; add images .* or remove the folder$"
    ) as raised:
        prepare(comp, data_config(), tmp_path / "out")
    # relabel() only sees classes that have images, so drop_classes cannot name this one: not offered.
    assert "drop_classes" not in str(raised.value)


def test_class_folder_without_any_file_in_a_zip_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    (comp / "train" / "contempt").mkdir()
    archive = zip_folder(comp, tmp_path / "comp.zip", folders=True)
    with pytest.raises(SourceError, match=r"comp.zip:train/contempt/: class folder holds no images"):
        prepare(archive, data_config(), tmp_path / "out")


def test_zip_with_folder_entries_and_a_top_folder_gives_the_same_dataset(competition, prepared, tmp_path):
    archive = zip_folder(competition / "competition", tmp_path / "comp.zip", prefix="my-competition/", folders=True)
    assert "my-competition/" in zipfile.ZipFile(archive).namelist()
    prepare(archive, data_config(), tmp_path / "from_zip")
    a, b = load_prepared(prepared), load_prepared(tmp_path / "from_zip")
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("train/stray.png", "stray.png: image outside any class folder"),
        ("test/extra123.png", "extra123.*not listed in sample_submission.csv"),
    ],
)
def test_an_image_where_none_belongs_is_named(competition, tmp_path, extra, message):
    comp = copy_competition(competition, tmp_path)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(comp / extra)
    with pytest.raises(SourceError, match=message):
        prepare(comp, data_config(), tmp_path / "out")


def test_two_train_images_with_one_id_are_refused(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    png = sorted((comp / "train" / "angry").iterdir())[0]
    Image.open(png).save(png.with_suffix(".jpg"))
    with pytest.raises(
        SourceError,
        match=rf"{png.stem}.jpg and .*{png.name}: both give the train image id .*'angry/{png.stem}'; remove one",
    ):
        prepare(comp, data_config(), tmp_path / "out")


def test_two_test_images_with_one_stem_are_refused(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    png = first_test_image(comp)
    Image.open(png).save(png.with_suffix(".jpg"))
    with pytest.raises(
        SourceError, match=rf"{png.stem}.jpg and .*{png.name}: both give the test id .*'{png.stem}'; remove one"
    ):
        prepare(comp, data_config(), tmp_path / "out")


LOSSLESS = {
    ".webp": {"lossless": True},
    ".WEBP": {"lossless": True, "format": "WEBP"},
    ".bmp": {},
    ".tif": {},
    ".TIFF": {"format": "TIFF"},
    ".gif": {},
    ".PNG": {"format": "PNG"},
}


def test_every_supported_format_gives_the_same_arrays(competition, prepared, tmp_path):
    comp = copy_competition(competition, tmp_path)
    tests = sorted((comp / "test").iterdir())
    trains = sorted((comp / "train" / "happy").iterdir())
    for (suffix, options), png in zip(
        [*LOSSLESS.items(), *LOSSLESS.items()], tests[: len(LOSSLESS)] + trains[: len(LOSSLESS)]
    ):
        Image.open(png).save(png.with_suffix(suffix), **options)
        png.unlink()
    prepare(comp, data_config(), tmp_path / "out")
    a, b = load_prepared(prepared), load_prepared(tmp_path / "out")
    assert list(a.train_ids) == list(b.train_ids) and list(a.test_ids) == list(b.test_ids)
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)


def test_animated_gif_gives_its_first_frame(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    png = first_test_image(comp)
    first = Image.open(png)
    first.save(png.with_suffix(".gif"), save_all=True, append_images=[Image.new("L", first.size, 255)])
    png.unlink()
    prepare(comp, data_config(), tmp_path / "out")
    assert np.array_equal(load_prepared(tmp_path / "out").test_images[0], np.asarray(first))


def test_test_image_in_an_unsupported_format_is_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    png = first_test_image(comp)
    png.rename(png.with_suffix(".avif"))
    with pytest.raises(SourceError, match=rf"{png.stem}.avif: suffix '.avif' is not a supported image format .*\.webp"):
        prepare(comp, data_config(), tmp_path / "out")


def test_image_over_pillows_pixel_limit_is_named(competition, tmp_path, monkeypatch):
    comp = copy_competition(competition, tmp_path)
    big = sorted((comp / "train" / "sad").iterdir())[0]
    Image.new("L", (120, 100)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 120×100 is then over the error limit, 2×5000; 48×48 is not
    with pytest.raises(
        SourceError,
        match=rf"{big.name}: image is 120×100 pixels, .*10000 pixels at most\); shrink the image or remove it",
    ):
        prepare(comp, data_config(), tmp_path / "out")
    assert Image.MAX_IMAGE_PIXELS == 5000


def test_sample_submission_id_without_image(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    (comp / "test" / f"{sample['id'][3]}.png").unlink()
    with pytest.raises(SourceError, match=f"id '{sample['id'][3]}' has no image"):
        prepare(comp, data_config(), tmp_path / "out")


def test_missing_source_says_what_to_point_at(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        prepare(tmp_path / "nope.zip", data_config(), tmp_path / "out")


def png_with_short_header() -> bytes:
    """A PNG whose IHDR chunk claims 12 bytes: Pillow raises ValueError, not OSError, for it."""
    image = io.BytesIO()
    Image.new("L", (48, 48)).save(image, format="PNG")
    data = image.getvalue()
    return data[:8] + (12).to_bytes(4, "big") + data[12:]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: png_with_short_header(), id="short-header"),
    ],
)
def test_damaged_image_is_named(competition, tmp_path, damage):
    comp = copy_competition(competition, tmp_path)
    bad = sorted((comp / "train" / "neutral").iterdir())[0]
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(SourceError, match=rf"{bad.name}: cannot decode image .*; replace or delete the file"):
        prepare(comp, data_config(), tmp_path / "out")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        ("id,label\n\u00e9t\u00e9,0\n".encode("latin-1"), "not a UTF-8 CSV file"),
        (b"id,label\n", "lists no test ids"),
        (b"id,label\nx,0,extra,more\n", r"line 2 has 4 cells, the header 2"),
        (b"id\nx\n", r"its header \['id'\] has one column; expected id,label or id and one probability column"),
        (bytes(range(256)), "not a UTF-8 CSV file"),
        (b'id,label\n"x,0\n', r"line 2 has 1 cells, the header 2"),
    ],
)
def test_malformed_sample_submission_is_named(competition, tmp_path, content, message):
    comp = copy_competition(competition, tmp_path)
    (comp / "sample_submission.csv").write_bytes(content)
    with pytest.raises(SourceError, match=rf"sample_submission.csv: {message}"):
        prepare(comp, data_config(), tmp_path / "out")


def test_sample_submission_with_a_byte_order_mark_reads_the_same_ids(competition, prepared, tmp_path):
    comp = copy_competition(competition, tmp_path)
    sample = comp / "sample_submission.csv"
    sample.write_bytes(b"\xef\xbb\xbf" + sample.read_bytes())
    prepare(comp, data_config(), tmp_path / "out")
    assert list(load_prepared(tmp_path / "out").test_ids) == list(load_prepared(prepared).test_ids)


def test_source_file_that_is_not_a_zip_is_named(tmp_path):
    source = tmp_path / "comp.zip"
    source.write_bytes(b"<html>Please log in</html>")
    with pytest.raises(SourceError, match="comp.zip: not a readable .zip"):
        prepare(source, data_config(), tmp_path / "out")


def test_damaged_member_of_a_zip_is_named(competition, tmp_path):
    archive = zip_folder(competition / "competition", tmp_path / "comp.zip")
    member = sorted(n for n in zipfile.ZipFile(archive).namelist() if n.startswith("train/"))[0]
    data = bytearray(archive.read_bytes())
    start = data.index(zipfile.ZipFile(archive).read(member))
    data[start + 100] ^= 0xFF  # stored, not compressed: only the CRC check notices
    archive.write_bytes(bytes(data))
    with pytest.raises(
        SourceError, match=rf"comp.zip:{member}: cannot read it from the .zip .*download the .zip again"
    ):
        prepare(archive, data_config(), tmp_path / "out")


def test_hidden_files_and_folders_are_not_classes_or_images(competition, prepared, tmp_path):
    comp = copy_competition(competition, tmp_path)
    (comp / "train" / ".ipynb_checkpoints").mkdir()
    (comp / "train" / "happy" / ".DS_Store").write_bytes(b"\0\1")
    (comp / "test" / "._t00000.png").write_bytes(b"not an image")
    prepare(comp, data_config(), tmp_path / "out")
    a, b = load_prepared(prepared), load_prepared(tmp_path / "out")
    assert a.classes == b.classes and list(a.train_ids) == list(b.train_ids) and list(a.test_ids) == list(b.test_ids)


def test_test_folder_of_another_name_and_ids_with_their_extension_give_the_same_images(competition, prepared, tmp_path):
    """As the emotion competition ships it: test images in test_kaggle/, sample `image_path,emotion` naming `0.jpg`."""
    comp = copy_competition(competition, tmp_path)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    (comp / "test").rename(comp / "test_kaggle")
    renamed = pd.DataFrame({"image_path": sample["id"] + ".png", "emotion": sample["label"]})
    renamed.to_csv(comp / "sample_submission.csv", index=False)
    prepare(comp, data_config(), tmp_path / "out")
    ours, reference = load_prepared(tmp_path / "out"), load_prepared(prepared)
    assert list(ours.test_ids) == list(renamed["image_path"])
    assert np.array_equal(ours.test_images, reference.test_images)
    assert (tmp_path / "out" / "sample_submission.csv").read_bytes() == (comp / "sample_submission.csv").read_bytes()


def test_sample_ids_spelled_unlike_any_test_file_are_not_called_a_broken_download(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    sample.assign(id="img_" + sample["id"]).to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(SourceError, match=r"none of its ids names a file in test/ \(ids look like \['img_") as error:
        prepare(comp, data_config(), tmp_path / "out")
    assert "incomplete" not in str(error.value)


def test_two_candidate_test_folders_are_named(competition, tmp_path):
    comp = copy_competition(competition, tmp_path)
    shutil.copytree(comp / "test", comp / "test_images")
    with pytest.raises(
        SourceError,
        match=r"cannot tell which folder holds the test images \(folders with images: test/, test_images/\)",
    ):
        prepare(comp, data_config(), tmp_path / "out")
