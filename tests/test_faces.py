"""`predict` on photos and `video` on clips, image sequences and cameras, with the real detectors,
the real onnxruntime and real video files, on a bundle trained by the real `dvc repro`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from pipeline.runtime.faces import CenterFace, HaarCascade, face_crop_box
from pipeline.runtime.tracking import Tracks, iou
from tests.conftest import PIPELINE_ENV, run_pipeline, start_interruptible
from tests.media import count_frames, face_frames, write_sequence, write_video

ASTRONAUT_FACE = np.array([[165, 55, 290, 185]])  # where her face is in the 512×512 photo, by eye


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.mark.parametrize(
    "detector",
    [lambda: CenterFace(threads=1, width=320, threshold=0.5), lambda: HaarCascade(min_size=30)],
    ids=["centerface", "haar"],
)
def test_detectors_find_the_one_face_of_a_real_photo(detector, astronaut_bgr):
    boxes = detector()(astronaut_bgr)
    assert len(boxes) == 1
    assert iou(boxes, ASTRONAUT_FACE)[0, 0] > 0.5


def test_centerface_finds_nothing_in_a_blank_frame():
    assert len(CenterFace(threads=1, width=320, threshold=0.5)(np.full((480, 640, 3), 128, np.uint8))) == 0


def test_face_crop_is_square_with_margin_and_stays_inside_the_frame():
    assert face_crop_box(np.array([100, 100, 150, 160, 1.0]), (480, 640), 0.1) == (89, 94, 161, 166)
    x1, y1, x2, y2 = face_crop_box(np.array([600, 440, 640, 480, 1.0]), (480, 640), 0.5)
    assert (x2, y2) == (640, 480) and x1 < x2 and y1 < y2
    assert face_crop_box(np.array([640, 480, 640, 480, 1.0]), (480, 640), 0.1)[:2] == (639, 479)


def test_tracks_keep_numbers_as_faces_move_and_smoothing_stops_a_one_frame_flip():
    tracks = Tracks(smoothing=0.7, min_overlap=0.3, max_missed=1)
    left, right = np.array([10, 10, 60, 60, 1.0]), np.array([200, 10, 250, 60, 1.0])
    first = tracks.update(np.stack([left, right]))
    moved = tracks.update(np.stack([right + [5, 0, 5, 0, 0], left + [5, 0, 5, 0, 0]]))  # detector order changed
    assert [t.number for t in first] == [0, 1] and [t.number for t in moved] == [1, 0]
    happy, sad = np.array([0.9, 0.1]), np.array([0.2, 0.8])
    labels = [int(tracks.smooth(moved[0], p).argmax()) for p in (happy, happy, sad, happy)]
    assert labels == [0, 0, 0, 0]
    assert [t.number for t in tracks.update(np.zeros((0, 5)))] == []
    assert [t.number for t in tracks.update(np.stack([left]))] == [0]  # missed once: still the same face
    tracks.update(np.zeros((0, 5)))
    tracks.update(np.zeros((0, 5)))
    assert [t.number for t in tracks.update(np.stack([left]))] == [2]  # gone too long: a new face


def test_predict_detects_faces_in_photos_takes_small_images_as_crops_and_reports_unreadable_files(
    e2e_project, tmp_path, astronaut_bgr
):
    root, _, _ = e2e_project
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    cv2.imwrite(str(photos / "astronaut.jpg"), astronaut_bgr)
    cv2.imwrite(str(photos / "nested" / "blank.png"), np.full((480, 640, 3), 128, np.uint8))
    Image.fromarray(np.load(root / "data" / "prepared" / "test_images.npy")[0]).save(photos / "crop.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    done = run_pipeline("predict", str(photos), "--out", str(tmp_path / "out.json"), cwd=root)
    assert done.returncode == 1, done.stderr
    assert "broken.jpg" in done.stderr and "1 of 4 files could not be read" in done.stderr
    rows = {Path(r["file"]).name: r for r in json.loads((tmp_path / "out.json").read_text())}
    assert set(rows) == {"astronaut.jpg", "blank.png", "crop.png"}
    face = rows["astronaut.jpg"]
    assert iou(np.array([[face["x1"], face["y1"], face["x2"], face["y2"]]], float), ASTRONAUT_FACE)[0, 0] > 0.5
    assert rows["blank.png"]["face"] is None and rows["blank.png"]["label"] is None
    assert (rows["crop.png"]["x2"], rows["crop.png"]["y2"]) == (48, 48)
    classes = json.loads((root / "data" / "prepared" / "classes.json").read_text())
    for row in (face, rows["crop.png"]):
        assert sum(row[c] for c in classes) == pytest.approx(1, abs=1e-3) and row["label"] == max(classes, key=row.get)
        assert -1 <= row["valence"] <= 1 and -1 <= row["arousal"] <= 1  # the synthetic competition has both targets
    assert "astronaut.jpg" in done.stdout


def test_predict_expands_globs_and_can_force_detection(e2e_project, tmp_path, astronaut_bgr):
    root, _, _ = e2e_project
    small = cv2.resize(astronaut_bgr, (140, 140), interpolation=cv2.INTER_AREA)  # small enough to pass for a crop
    cv2.imwrite(str(tmp_path / "a.png"), small)
    cv2.imwrite(str(tmp_path / "b.png"), small)
    as_crops = run_pipeline("predict", str(tmp_path / "*.png"), "--out", str(tmp_path / "crops.csv"), cwd=root)
    detected = run_pipeline(
        "predict", str(tmp_path / "*.png"), "--no-faces", "--out", str(tmp_path / "detected.csv"), cwd=root
    )
    assert as_crops.returncode == 0 and detected.returncode == 0, as_crops.stderr + detected.stderr
    crops, found = pd.read_csv(tmp_path / "crops.csv"), pd.read_csv(tmp_path / "detected.csv")
    assert len(crops) == 2 and (crops["x2"] == 140).all()
    assert len(found) == 2 and found["label"].notna().all() and (found["x2"] - found["x1"] < 100).all()


def test_video_file_gives_an_annotated_video_with_every_frame_and_a_row_per_face_and_frame(e2e_project, tmp_path):
    root, _, _ = e2e_project
    clip = write_video(tmp_path / "clip.mp4", face_frames(24, faces=2, side=220, step=3))
    done = run_pipeline("video", str(clip), "--out", str(tmp_path / "annotated.mp4"), "--detect-every", "4", cwd=root)
    assert done.returncode == 0, done.stderr
    assert count_frames(tmp_path / "annotated.mp4") == 24
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    capture.release()
    table = pd.read_csv(tmp_path / "annotated.csv")
    assert sorted(table["frame"].unique()) == list(range(24))
    assert (table.groupby("frame")["face"].apply(sorted).map(tuple) == (0, 1)).all()  # each face keeps its number
    left = table[table["face"] == table.loc[table["x1"].idxmin(), "face"]]
    assert left["x1"].iloc[-1] > left["x1"].iloc[0]  # the box follows the moving face
    assert table["time"].iloc[-1] == pytest.approx(23 / 25, abs=1e-3)
    assert table[["valence", "arousal"]].abs().max().max() <= 1 and table[["valence", "arousal"]].notna().all().all()
    assert "24 frames" in done.stdout and "ms a frame" in done.stdout


def test_image_sequence_stands_in_for_a_webcam_and_writes_motion_jpeg(e2e_project, tmp_path):
    root, _, _ = e2e_project
    pattern = write_sequence(tmp_path / "frames", face_frames(12, faces=1, side=240))
    done = run_pipeline(
        "video", pattern, "--out", str(tmp_path / "cam.avi"), "--fps", "10", "--max-frames", "10", cwd=root
    )
    assert done.returncode == 0, done.stderr
    assert count_frames(tmp_path / "cam.avi") == 10
    table = pd.read_csv(tmp_path / "cam.csv")
    assert len(table) == 10 and table["time"].iloc[1] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "source, message",
    [
        ("7", "cannot open camera 7"),
        ("missing.mp4", "missing.mp4: no such file"),
        ("not_a_video.mp4", "not_a_video.mp4"),
        ("frames/%04d.png", "cannot open image sequence"),
    ],
)
def test_video_sources_that_cannot_be_read_get_a_clear_error_and_leave_nothing(e2e_project, tmp_path, source, message):
    root, _, _ = e2e_project
    (tmp_path / "not_a_video.mp4").write_text("text, not video")
    done = run_pipeline("video", source, "--model", str(root / "bundle"), "--out", "out.mp4", cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_video.mp4"]


def test_ctrl_c_ends_a_live_session_and_keeps_what_was_recorded(e2e_project, tmp_path):
    """A webcam session has no last frame: Ctrl-C is how it ends, and the recording must survive it."""
    import signal
    import time

    root, _, _ = e2e_project
    pattern = write_sequence(tmp_path / "frames", face_frames(400, faces=1, side=200, step=1))
    out = tmp_path / "live.mp4"
    # --realtime: 400 frames at 25 a second take 16 s on any machine, so Ctrl-C lands in a running session.
    command = [sys.executable, "-m", "pipeline", "video", pattern, "--out", str(out), "--realtime", "--fps", "25"]
    process = start_interruptible(command, root, PIPELINE_ENV)
    partial = tmp_path / ".live.partial.mp4"
    # The writer opens at the first frame, but its data reaches the file in buffered blocks: wait for one,
    # so at least a frame is recorded before Ctrl-C, however slowly a loaded machine runs the child.
    deadline = time.monotonic() + 120
    while (
        not (partial.exists() and partial.stat().st_size > 1024)
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert process.poll() is None, "the session ended before Ctrl-C: " + process.communicate()[1]
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # a no-op once it has ended; a hung one must not outlive the test
    assert process.returncode == 0, stderr
    assert "stopped by Ctrl-C" in stdout
    recorded = count_frames(out)
    table = pd.read_csv(tmp_path / "live.csv")
    assert 1 <= recorded < 400 and table["frame"].max() <= recorded
    assert not partial.exists()
