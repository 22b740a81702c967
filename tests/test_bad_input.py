"""Unusual input on prepare, predict and video: the right result, or one line naming the value or file and the fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.commands import predict, video
from pipeline.errors import ConfigError, PipelineError
from pipeline.files import check_writable
from pipeline.runtime.bundle_format import FAST, FULL, bundle_file
from pipeline.stages.prepare import SourceError, prepare
from pipeline.training.models import check_model_name
from tests.conftest import data_config
from tests.layouts import as_label_table


@pytest.fixture
def comp(competition, tmp_path) -> Path:
    return Path(shutil.copytree(competition / "competition", tmp_path / "comp"))


def prepared_labels(out: Path) -> tuple[list[str], list[str], pd.Series]:
    classes = json.loads((out / "classes.json").read_text())
    return classes, json.loads((out / "submission_labels.json").read_text()), pd.read_csv(out / "train.csv")["label"]


def test_labels_differing_only_in_letter_case_are_one_class(comp, tmp_path, capsys):
    angry = sorted((comp / "train" / "angry").iterdir())
    (comp / "train" / "Angry").mkdir()
    for path in angry[:3]:
        path.rename(comp / "train" / "Angry" / path.name)
    prepare(comp, data_config(), tmp_path / "out")
    classes, spelled, labels = prepared_labels(tmp_path / "out")
    assert classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert "Angry" not in spelled and (labels == "angry").sum() == len(angry)
    assert "'Angry'" in capsys.readouterr().out  # said, not silent


def test_label_codes_spelled_as_floats_take_the_samples_spelling(comp, tmp_path):
    table = tmp_path / "table"
    as_label_table(comp, table)
    train = pd.read_csv(table / "train.csv", dtype=str)
    train.assign(label=train["label"] + ".0").to_csv(table / "train.csv", index=False)
    prepare(table, data_config(), tmp_path / "out")
    classes, spelled, _ = prepared_labels(tmp_path / "out")
    sample = set(pd.read_csv(table / "sample_submission.csv", dtype=str)["label"])
    assert sample <= set(spelled) and not any(label.endswith(".0") for label in spelled)


def test_a_sample_whose_labels_no_class_spells_is_refused_naming_them(comp, tmp_path):
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    sample.assign(label="joyful").to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(SourceError, match="'joyful'"):
        prepare(comp, data_config(), tmp_path / "out")


def test_a_label_table_repeating_a_row_keeps_it_once(comp, tmp_path):
    table = tmp_path / "table"
    as_label_table(comp, table)
    train = pd.read_csv(table / "train.csv", dtype=str)
    pd.concat([train, train.iloc[[5]]]).to_csv(table / "train.csv", index=False)
    prepare(table, data_config(), tmp_path / "out")
    assert len(pd.read_csv(tmp_path / "out" / "train.csv")) == len(train)


def test_a_label_table_giving_one_image_two_labels_names_it(comp, tmp_path):
    table = tmp_path / "table"
    as_label_table(comp, table)
    train = pd.read_csv(table / "train.csv", dtype=str)
    other = train.iloc[[5]].assign(label=str((int(train["label"].iloc[5]) + 1) % 7))
    pd.concat([train, other]).to_csv(table / "train.csv", index=False)
    with pytest.raises(SourceError, match=f"{train['image_id'].iloc[5]!r}.*two labels"):
        prepare(table, data_config(), tmp_path / "out")


def test_predict_reads_a_16_bit_png_as_its_8_bit_copy(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    assert np.array_equal(predict.read_rgb(tmp_path / "sixteen.png"), predict.read_rgb(tmp_path / "eight.png"))


@pytest.mark.parametrize(
    "command, arguments, option",
    [
        (predict, ["--margin", "-1"], "--margin"),
        (predict, ["--threshold", "-1"], "--threshold"),
        (predict, ["--threshold", "1.5"], "--threshold"),
        (predict, ["--detect-width", "0"], "--detect-width"),
        (predict, ["--min-face", "0"], "--min-face"),
        (predict, ["--threads", "0"], "--threads"),
        (video, ["--fps", "-5"], "--fps"),
        (video, ["--fps", "nan"], "--fps"),
        (video, ["--max-frames", "0"], "--max-frames"),
        (video, ["--max-frames", "-3"], "--max-frames"),
        (video, ["--detect-every", "0"], "--detect-every"),
        (video, ["--smoothing", "1.5"], "--smoothing"),
    ],
)
def test_a_number_out_of_range_is_refused_naming_its_option(command, arguments, option, capsys):
    with pytest.raises(SystemExit) as stopped:
        command.parse_args(["in.mp4", "--csv", "faces.csv", *arguments])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and f"argument {option}:" in said and arguments[1] in said


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_unwritable_output_is_refused_before_the_work(tmp_path, where):
    (tmp_path / "file").write_text("x")
    out = {"under_a_file": tmp_path / "file" / "faces.csv", "proc": Path("/proc/faces.csv")}[where]
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(PipelineError, match=str(out)):
        check_writable(out, "--out")


def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    if os.access(folder, os.W_OK):
        pytest.skip("this user writes into read-only folders (root)")
    with pytest.raises(PipelineError, match="read-only"):
        check_writable(folder / "faces.csv", "--out")


def test_predict_refuses_an_unwritable_out_before_reading_any_image(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "predict", lambda *_: pytest.fail("the images were read"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match="--out"):
        predict.main([str(tmp_path / "missing.png"), "--out", str(tmp_path / "file" / "faces.csv")])


def test_video_does_not_suggest_avi_for_an_avi_it_cannot_write(tmp_path, monkeypatch):
    class Closed:
        def __init__(self, *_):
            pass

        def isOpened(self):
            return False

    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    with pytest.raises(PipelineError) as refused:
        video.open_writer(tmp_path / "out.avi", 25.0, np.zeros((48, 64, 3), np.uint8))
    assert "try --out with .avi" not in str(refused.value) and "out.avi" in str(refused.value)


def test_an_onnx_file_given_is_the_model_loaded_whatever_the_variant(tmp_path):
    for name in (FULL, FAST):
        (tmp_path / name).write_bytes(b"")
    assert bundle_file(tmp_path / FULL, fast=True) == tmp_path / FULL
    assert bundle_file(tmp_path, fast=True) == tmp_path / FAST


def test_a_file_whose_name_looks_like_a_pattern_is_read_as_named(tmp_path):
    photo = tmp_path / "photo[1].png"
    photo.write_bytes(b"")
    assert predict.expand([str(photo)]) == [photo]


def test_an_image_sequence_starting_past_zero_is_read_from_its_first_frame(tmp_path):
    for number in range(100, 104):
        cv2.imwrite(str(tmp_path / f"{number:04d}.png"), np.full((16, 16, 3), number, np.uint8))
    capture, _ = video.open_source(str(tmp_path / "%04d.png"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 4


def test_an_image_sequence_with_no_frame_names_the_pattern_and_how_to_count(tmp_path):
    with pytest.raises(PipelineError, match=r"%04d.png: no file matches.*lowest number"):
        video.open_source(str(tmp_path / "%04d.png"))


def test_unknown_model_names_get_the_closest_spellings():
    with pytest.raises(ConfigError, match="resnet10t"):
        check_model_name("resnet10x")
