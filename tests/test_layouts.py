"""The synthetic competition in each layout `prepare` reads gives the same images, labels and submissions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import Prepared, load_prepared
from pipeline.evaluation.submission_format import make_submission, read_sample
from pipeline.stages.prepare import SourceError, prepare
from tests.conftest import data_config
from tests.layouts import CLASS_NAMES, CODES, as_label_table, as_pixel_files, as_pixel_table, zip_folder


def in_reference_order(ours: Prepared, reference: Prepared, our_stems: list[str]) -> np.ndarray:
    """Row of `reference` holding each of our train images (matched by file stem)."""
    row_of = {train_id.split("/")[1]: row for row, train_id in enumerate(reference.train_ids)}
    return np.array([row_of[stem] for stem in our_stems])


def submitted_labels(data: Prepared, folder: Path, probs: np.ndarray) -> pd.DataFrame:
    return make_submission(
        probs, data.test_ids, read_sample(folder / "sample_submission.csv"), data.submission_labels, "test"
    )


@pytest.fixture
def probs(prepared) -> np.ndarray:
    """Predictions that differ from image to image, so a submission's rows cannot match by chance."""
    data = load_prepared(prepared)
    return np.random.default_rng(0).random((len(data.test_ids), len(data.classes)))


@pytest.mark.parametrize("class_names", [CLASS_NAMES, {}], ids=["codes named", "codes kept"])
def test_label_table_of_codes_gives_the_same_images_and_submits_codes(
    competition, prepared, probs, tmp_path, class_names
):
    as_label_table(competition / "competition", tmp_path / "comp")
    prepare(
        zip_folder(tmp_path / "comp", tmp_path / "comp.zip"), data_config(class_names=class_names), tmp_path / "out"
    )
    ours, reference = load_prepared(tmp_path / "out"), load_prepared(prepared)
    rows = in_reference_order(ours, reference, list(ours.train_ids))
    assert np.array_equal(ours.train_images, reference.train_images[rows])
    assert [ours.classes[i] for i in ours.train_labels] == [
        CODES[reference.classes[i]] if not class_names else reference.classes[i] for i in reference.train_labels[rows]
    ]
    assert list(ours.test_ids) == list(reference.test_ids) and np.array_equal(ours.test_images, reference.test_images)
    ours_submitted = submitted_labels(
        ours, tmp_path / "out", probs[:, [reference.classes.index(CLASS_NAMES.get(c, c)) for c in ours.classes]]
    )
    reference_submitted = submitted_labels(reference, prepared, probs)
    assert list(ours_submitted["label"]) == list(reference_submitted["label"].map(CODES))
    assert list(ours.train_files[:1]) == [f"train_images/{ours.train_ids[0]}.png"]


def test_pixel_table_with_usage_gives_the_same_images_and_writes_its_own_sample(competition, prepared, probs, tmp_path):
    original_id = as_pixel_table(competition / "competition", tmp_path / "comp")
    prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")
    ours, reference = load_prepared(tmp_path / "out"), load_prepared(prepared)
    assert ours.classes == reference.classes
    assert np.array_equal(ours.train_images, reference.train_images) and np.array_equal(
        ours.train_labels, reference.train_labels
    )
    assert list(original_id[ours.test_ids]) == list(reference.test_ids)  # row numbers of fer2013.csv, in file order
    assert np.array_equal(ours.test_images, reference.test_images)
    submitted = submitted_labels(ours, tmp_path / "out", probs)
    assert list(submitted.columns) == ["id", "emotion"]
    assert list(submitted["emotion"]) == list(submitted_labels(reference, prepared, probs)["label"].map(CODES))
    assert ours.train_files[0] == "fer2013.csv:0"


def test_pixel_train_and_test_files_follow_the_sample_order(competition, prepared, probs, tmp_path):
    original_id = as_pixel_files(competition / "competition", tmp_path / "comp")
    prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")
    ours, reference = load_prepared(tmp_path / "out"), load_prepared(prepared)
    assert list(ours.test_ids) == [str(i) for i in range(len(ours.test_ids))][::-1]  # the sample's own order
    assert list(original_id[ours.test_ids]) == list(reference.test_ids)[::-1]
    assert np.array_equal(ours.test_images, reference.test_images[::-1])
    assert np.array_equal(ours.train_images, reference.train_images)
    assert ours.submission_labels == [CODES[c] for c in ours.classes]


def test_pixel_table_images_are_resized_and_made_rgb(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES, image_size=32, channels=3), tmp_path / "out")
    assert load_prepared(tmp_path / "out").train_images.shape[1:] == (32, 32, 3)


def test_a_pixel_row_that_is_not_square_is_named(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "fer2013.csv", dtype=str)
    table.loc[5, "pixels"] = " ".join(["7"] * 100 + ["8"])
    table.to_csv(tmp_path / "comp" / "fer2013.csv", index=False)
    with pytest.raises(SourceError, match=r"fer2013.csv:5: 101 pixel values make no square image"):
        prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_code_without_a_class_name_is_named(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    partial = {code: name for code, name in CLASS_NAMES.items() if code != "3"}
    with pytest.raises(SourceError, match=r"data.class_names names no class for label\(s\) \['3'\]"):
        prepare(tmp_path / "comp", data_config(class_names=partial), tmp_path / "out")


def test_a_label_table_row_without_its_image_is_named(competition, tmp_path):
    as_label_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "train.csv", dtype=str)
    (tmp_path / "comp" / "train_images" / f"{table['image_id'][3]}.png").unlink()
    with pytest.raises(
        SourceError,
        match=rf"train.csv: line 5: image_id '{table['image_id'][3]}' names no image in train_images/ \(1 such rows\)",
    ):
        prepare(tmp_path / "comp", data_config(), tmp_path / "out")


def test_a_label_column_detection_cannot_pick_is_asked_for_and_then_used(competition, tmp_path):
    as_label_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "train.csv", dtype=str)
    table.rename(columns={"label": "expr"}).assign(rater="r1").to_csv(tmp_path / "comp" / "train.csv", index=False)
    with pytest.raises(
        SourceError,
        match=r"cannot tell which column holds the labels \(columns \['image_id', 'expr', 'rater'\]\); set "
        r"data.label_column",
    ):
        prepare(tmp_path / "comp", data_config(), tmp_path / "out")
    prepare(tmp_path / "comp", data_config(label_column="expr"), tmp_path / "out")
    assert load_prepared(tmp_path / "out").classes == sorted(CODES.values())


def test_test_folder_and_sample_named_in_params(competition, prepared, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    shutil.copytree(comp / "test", comp / "extra_images")
    (comp / "test").rename(comp / "holdout")
    (comp / "sample_submission.csv").rename(comp / "answers_template.csv")
    with pytest.raises(
        SourceError,
        match=r"no sample submission \(\*submission\*.csv\) found; found extra_images/ \(40 images\), holdout/ \(40 "
        r"images\), train/ .*"
        r"answers_template.csv \(columns \['id', 'label'\]\)",
    ):
        prepare(comp, data_config(), tmp_path / "out")
    with pytest.raises(SourceError, match=r"folders with images: extra_images/, holdout/\); set data.test_folder"):
        prepare(comp, data_config(sample_submission="answers_template.csv"), tmp_path / "out")
    prepare(comp, data_config(sample_submission="answers_template.csv", test_folder="extra_images"), tmp_path / "out")
    assert np.array_equal(load_prepared(tmp_path / "out").test_images, load_prepared(prepared).test_images)


def test_example_submission_is_found_as_the_sample(competition, prepared, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    (comp / "sample_submission.csv").rename(comp / "example_submission.csv")
    prepare(comp, data_config(), tmp_path / "out")
    assert list(load_prepared(tmp_path / "out").test_ids) == list(load_prepared(prepared).test_ids)


def test_a_download_of_no_known_layout_lists_what_it_holds_and_the_layouts(competition, tmp_path):
    comp = tmp_path / "comp"
    shutil.copytree(competition / "competition" / "test", comp / "pictures")
    shutil.copy(competition / "competition" / "sample_submission.csv", comp)
    (comp / "notes.txt").write_text("read me")
    with pytest.raises(SourceError) as error:
        prepare(comp, data_config(), tmp_path / "out")
    message = str(error.value)
    assert "not a competition layout this pipeline reads: found pictures/ (" in message
    assert "sample_submission.csv (columns ['id', 'label'])" in message
    assert all(
        layout in message for layout in ("class folders: train/<class>/", "label table:", "pixel table:", "data.layout")
    )


def test_a_forced_layout_the_download_lacks_is_refused_with_what_it_holds(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    shutil.copy(competition / "competition" / "sample_submission.csv", tmp_path / "comp")
    with pytest.raises(
        SourceError,
        match=r"no train/<class>/ folders found; found no folders; fer2013.csv \(columns \['emotion', 'pixels', "
        r"'Usage'\]\)",
    ):
        prepare(tmp_path / "comp", data_config(layout="class_folders"), tmp_path / "out")


def test_a_pixel_row_with_text_that_is_not_a_number_is_named(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "fer2013.csv", dtype=str)
    table.loc[2, "pixels"] = table.loc[2, "pixels"].replace(" ", " x ", 1)
    table.to_csv(tmp_path / "comp" / "fer2013.csv", index=False)
    with pytest.raises(SourceError, match=r"fer2013.csv:2: pixels must be whole numbers separated by spaces"):
        prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")


def test_a_label_column_of_numbers_is_not_taken_for_ids_of_numbered_test_images(competition, tmp_path):
    """Label codes 0-6 also name test images 0.png ... 6.png: the ids are the column of unique values."""
    as_label_table(competition / "competition", tmp_path / "comp")
    for number, image in enumerate(sorted((tmp_path / "comp" / "test_images").iterdir())):
        image.rename(image.with_name(f"{number}.png"))
    sample = pd.read_csv(tmp_path / "comp" / "sample_submission.csv", dtype=str)
    order = {old: str(n) for n, old in enumerate(sorted(sample["id"]))}
    sample.assign(id=sample["id"].map(order)).to_csv(tmp_path / "comp" / "sample_submission.csv", index=False)
    prepare(tmp_path / "comp", data_config(), tmp_path / "out")
    assert load_prepared(tmp_path / "out").train_files[0].startswith("train_images/")


def test_two_images_one_stem_are_never_matched_by_stem(competition, tmp_path):
    as_label_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "train.csv", dtype=str)
    shutil.copy(
        tmp_path / "comp" / "train_images" / f"{table['image_id'][0]}.png",
        tmp_path / "comp" / "train_images" / f"{table['image_id'][0]}.bmp",
    )
    with pytest.raises(
        SourceError,
        match=r"train.csv: no value of columns \['image_id', 'label'\] names an image .*00000.png share the name "
        r"'00000'",
    ):
        prepare(tmp_path / "comp", data_config(), tmp_path / "out")
    table.assign(image_id=table["image_id"] + ".png").to_csv(tmp_path / "comp" / "train.csv", index=False)
    prepare(tmp_path / "comp", data_config(), tmp_path / "out")  # file names tell them apart


def test_a_single_folder_under_train_is_a_wrapper_not_one_class(competition, tmp_path):
    as_label_table(competition / "competition", tmp_path / "comp")
    (tmp_path / "comp" / "train_images").rename(tmp_path / "comp" / "train_wrapped")
    (tmp_path / "comp" / "train").mkdir()
    (tmp_path / "comp" / "train_wrapped").rename(tmp_path / "comp" / "train" / "train")
    prepare(tmp_path / "comp", data_config(), tmp_path / "out")
    assert load_prepared(tmp_path / "out").classes == sorted(CODES.values())


def test_images_in_subfolders_of_a_class_keep_their_own_ids(competition, prepared, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    happy = sorted((comp / "train" / "happy").iterdir())
    for subject, image in zip(("S010", "S011"), happy[:2]):
        (comp / "train" / "happy" / subject).mkdir()
        image.rename(comp / "train" / "happy" / subject / "001.png")
    prepare(comp, data_config(), tmp_path / "out")
    ours = load_prepared(tmp_path / "out")
    assert {"happy/S010/001", "happy/S011/001"} <= set(ours.train_ids)
    assert len(ours.train_ids) == len(load_prepared(prepared).train_ids)


def test_usage_values_train_and_test_are_understood_and_a_table_without_train_rows_is_refused(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    table = pd.read_csv(tmp_path / "comp" / "fer2013.csv", dtype=str)
    table.assign(Usage=table["Usage"].map({"Training": "train", "PublicTest": "test"})).rename(
        columns={"Usage": " split"}
    ).to_csv(tmp_path / "comp" / "fer2013.csv", index=False)
    prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")
    table.assign(Usage="PublicTest").to_csv(tmp_path / "comp" / "fer2013.csv", index=False)
    with pytest.raises(SourceError, match=r"fer2013.csv: its Usage column \(\['PublicTest'\]\) marks no row as train"):
        prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out2")


def test_a_test_table_with_an_id_column_is_keyed_by_it(competition, tmp_path):
    original_id = as_pixel_files(competition / "competition", tmp_path / "comp")
    test = pd.read_csv(tmp_path / "comp" / "test.csv", dtype=str)
    test.insert(0, "id", "face" + test.index.astype(str))
    test.to_csv(tmp_path / "comp" / "test.csv", index=False)
    sample = pd.read_csv(tmp_path / "comp" / "sample_submission.csv", dtype=str)
    sample.assign(id="face" + sample["id"]).to_csv(tmp_path / "comp" / "sample_submission.csv", index=False)
    prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")
    assert list(load_prepared(tmp_path / "out").test_ids) == list("face" + sample["id"])
    assert len(original_id) == len(sample)


def test_a_train_table_param_naming_no_file_is_named(competition, tmp_path):
    as_pixel_table(competition / "competition", tmp_path / "comp")
    with pytest.raises(SourceError, match=r"fer2013\.cvs: no such file .*; found no folders; fer2013.csv \(columns"):
        prepare(tmp_path / "comp", data_config(train_table="fer2013.cvs"), tmp_path / "out")


def test_a_sample_whose_labels_are_neither_names_nor_codes_is_refused(competition, tmp_path):
    as_label_table(competition / "competition", tmp_path / "comp")
    sample = pd.read_csv(tmp_path / "comp" / "sample_submission.csv", dtype=str)
    sample.assign(label="Happy").to_csv(tmp_path / "comp" / "sample_submission.csv", index=False)
    with pytest.raises(
        SourceError,
        match=r"its labels \['Happy'\] are neither class names .* nor the labels as the train data writes them",
    ):
        prepare(tmp_path / "comp", data_config(class_names=CLASS_NAMES), tmp_path / "out")


def test_test_files_that_differ_from_the_sample_ids_only_in_letter_case_are_matched(competition, prepared, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    sample.assign(id=sample["id"] + ".png").to_csv(comp / "sample_submission.csv", index=False)
    first, second = (comp / "test" / f"{i}.png" for i in sample["id"][:2])
    first.rename(first.with_suffix(".PNG"))
    second.rename(second.with_name(second.name.upper()))
    prepare(comp, data_config(), tmp_path / "out")
    ours, reference = load_prepared(tmp_path / "out"), load_prepared(prepared)
    assert list(ours.test_ids) == list(sample["id"] + ".png")
    assert np.array_equal(ours.test_images, reference.test_images)
