"""Photo competitions: `prepare` crops each image to its largest face exactly as `predict` crops faces, keeps and
lists the images without one, and the synthetic competition exists as photos to prove it on."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.commands.preset import merge
from pipeline.data import NO_FACE_FILE, load_prepared
from pipeline.files import read_json
from pipeline.ingest.images import to_model_input
from pipeline.runtime.faces import face_crop_box, largest_face, open_detector
from pipeline.runtime.frames import add_face_options
from pipeline.stages.prepare import prepare
from pipeline.stages.report import face_crop_summary
from pipeline.stages.synthesize import write_competition
from tests.conftest import PROJECT, data_config, make_project, repro, run_pipeline, synthetic_config, tiny_params

PHOTOS = synthetic_config(seed=5, train_per_class=3, test_size=8, image_size=64, photos=True, duplicate_fraction=0.1)
SIZE = 56


@pytest.fixture(scope="module")
def photo_competition(tmp_path_factory):
    """The synthetic photo competition, with one blank train photo (no face in it) added."""
    root = tmp_path_factory.mktemp("photos") / "synthetic"
    write_competition(PHOTOS, root)
    blank = np.full((180, 240, 3), 90, np.uint8)
    cv2.imwrite(str(root / "competition/train/happy/blank.png"), blank)
    return root


@pytest.fixture(scope="module")
def cropped(photo_competition, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(photo_competition / "competition", data_config(image_size=SIZE, channels=3, face_crop=True), out)
    return out


@functools.cache
def predict_defaults() -> tuple[argparse.Namespace, object]:
    """`predict`'s options as a user leaves them, and the detector they open."""
    parser = argparse.ArgumentParser()
    add_face_options(parser, "full")
    options = parser.parse_args([])
    return options, open_detector(options.detector, 1, options.detect_width, options.threshold, options.min_face)


def predict_face_input(path) -> tuple[np.ndarray, bool]:
    """What `predict` with its default options feeds the model for the largest face of the photo at `path`."""
    options, detector = predict_defaults()
    frame = cv2.imread(str(path))
    box = largest_face(detector(frame))
    if box is None:
        return to_model_input(Image.open(path), SIZE, 3), False
    x1, y1, x2, y2 = face_crop_box(box, frame.shape, options.margin)
    return to_model_input(Image.fromarray(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)), SIZE, 3), True


def test_the_synthetic_photos_are_rgb_scenes_around_faces_a_detector_finds(photo_competition):
    files = sorted((photo_competition / "competition/train").rglob("0*.png"))
    scenes = [cv2.imread(str(path)) for path in files]
    assert all(scene.ndim == 3 and min(scene.shape[:2]) > 2 * PHOTOS.image_size for scene in scenes)
    assert not all(np.array_equal(scene[..., 0], scene[..., 1]) for scene in scenes)  # colour, not grey
    found = [predict_face_input(path)[1] for path in files]
    assert np.mean(found) >= 0.8
    truth = pd.read_csv(photo_competition / "train_truth.csv", dtype=str)
    assert truth["id"].nunique() == len(files)
    repeated = pd.Series([scene.tobytes() for scene in scenes]).duplicated().sum()
    assert repeated >= 1  # a repeated face keeps its scene: folds keep the twins together


def test_prepare_crops_every_image_as_predict_crops_its_faces(photo_competition, cropped):
    data = load_prepared(cropped)
    rows = pd.read_csv(cropped / "train.csv", dtype=str)
    competition = photo_competition / "competition"
    checked = 0
    for index, file in enumerate(rows["file"]):
        expected, _ = predict_face_input(competition / file)
        np.testing.assert_array_equal(data.train_images[index], expected, err_msg=file)
        checked += 1
    assert checked == len(rows) and data.train_images.shape[1:] == (SIZE, SIZE, 3)


def test_images_without_a_face_are_kept_whole_counted_and_listed(photo_competition, cropped):
    data = load_prepared(cropped)
    faceless = pd.read_csv(cropped / NO_FACE_FILE, dtype=str)
    assert "train/happy/blank.png" in set(faceless["file"])
    assert set(faceless["split"]) <= {"train", "test"}
    blank_row = list(data.train_files).index("train/happy/blank.png")
    assert (data.train_images[blank_row] == 90).all()  # the whole grey photo, resized
    line, warning, counts = face_crop_summary(data)
    assert counts == {split: int((faceless["split"] == split).sum()) for split in ("train", "test")}
    assert f"no face found in {counts['train']} of {len(data.train_ids)} train" in line
    assert "train/happy/blank.png" in line or len(faceless) > 5
    assert (warning is not None) == any(
        counts[split] > 0.1 * total for split, total in (("train", len(data.train_ids)), ("test", len(data.test_ids)))
    )
    assert read_json(cropped / "meta.json")["face_crop"] is True


def test_without_face_crop_the_photos_are_resized_whole_and_the_report_says_nothing(photo_competition, tmp_path):
    out = tmp_path / "prepared"
    prepare(photo_competition / "competition", data_config(image_size=SIZE, channels=3, face_crop=False), out)
    data = load_prepared(out)
    first = photo_competition / "competition" / data.train_files[0]
    np.testing.assert_array_equal(data.train_images[0], to_model_input(Image.open(first), SIZE, 3))
    assert not (out / NO_FACE_FILE).exists() and face_crop_summary(data) is None


def test_face_crop_on_a_gray_pixel_table_crops_the_faces_it_finds(tmp_path):
    """Pixel tables are cropped too: a row holding the astronaut shrunk to 96 px comes back as her face."""
    from skimage import data as skimage_data

    gray = cv2.resize(
        cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY), (96, 96), interpolation=cv2.INTER_AREA
    )
    blank = np.full((96, 96), 100, np.uint8)
    rows = [" ".join(map(str, image.ravel())) for image in (gray, blank, gray, blank)]
    source = tmp_path / "competition"
    source.mkdir()
    pd.DataFrame({"emotion": [0, 1, 0, 1], "pixels": rows, "Usage": ["Training"] * 2 + ["PublicTest"] * 2}).to_csv(
        source / "fer.csv", index=False
    )
    out = tmp_path / "prepared"
    prepare(source, dataclasses.replace(data_config(image_size=48, channels=1, face_crop=True), targets=()), out)
    faceless = pd.read_csv(out / NO_FACE_FILE, dtype=str)
    assert len(faceless) == 2
    whole = to_model_input(Image.fromarray(gray), 48, 1)
    assert not np.array_equal(load_prepared(out).train_images[0], whole)  # cropped: not the whole picture


@pytest.mark.slow
def test_the_photos_preset_runs_end_to_end_and_predict_labels_the_photos_as_the_submission_does(tmp_path):
    """`dvc repro` with presets/photos.yaml (shrunk to seconds, from scratch: no hub here) on the synthetic photos;
    then `predict` on the raw test photos, cropping their faces itself, agrees with the submitted labels."""
    params = merge(tiny_params(), yaml.safe_load((PROJECT / "presets/photos.yaml").read_text()))
    params["synthetic"] = {**params["synthetic"], "train_per_class": 6, "test_size": 20}
    params["data"] = {**params["data"], "image_size": 48}
    params["train"] = {
        **params["train"],
        "epochs": 1,
        "batch_size": 16,
        "pretrained": False,
        "time_budget_minutes": None,
    }
    params["folds"] = {**params["folds"], "ids": [0, 1]}
    params["tta"] = {**params["tta"], "views": [{}]}
    params["export"] = {**params["export"], "latency_runs": 1}
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    root = make_project(tmp_path / "project", params, env)
    repro(root, env)
    assert "Face crops (data.face_crop): no face found in" in (root / "report/report.md").read_text()
    test_photos = root / "data/synthetic/competition/test"
    done = run_pipeline("predict", str(test_photos), "--out", str(tmp_path / "photos.csv"), cwd=root)
    assert done.returncode == 0, done.stderr
    predicted = pd.read_csv(tmp_path / "photos.csv").dropna(subset=["label"])
    predicted["id"] = predicted["file"].map(lambda file: Path(file).stem)
    submitted = pd.read_csv(root / "submissions/ensemble.csv", dtype=str).set_index("id")["label"]
    assert len(predicted) >= 0.8 * len(submitted)
    assert (predicted["label"].to_numpy() == submitted[predicted["id"]].to_numpy()).mean() >= 0.9
