"""Emotion of the faces in image files, folders and globs: a table on screen, CSV or JSON on disk.

    python -m pipeline predict photo.jpg                       # faces found by the detector
    python -m pipeline predict crops/ --out emotions.csv       # a folder, recursively
    python -m pipeline predict 'shots/*.png' --out faces.json
    python -m pipeline predict crops/ --model export/ensemble.int8.onnx   # any graph of the export stage

Bundles trained on data with valence and arousal also give both, in [-1, 1], beside the classes.

A small image (at most 3× the bundle's image size on its longer side, like the competition's own
48×48 faces) is taken as one face already cropped; a larger one goes through face detection first.
--faces/--no-faces decide instead. Unreadable files are reported and skipped, and the exit status
is then 1.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import PipelineError
from pipeline.files import atomic_path, check_writable
from pipeline.ingest.images import IMAGE_SUFFIXES
from pipeline.runtime.classifier import Classifier
from pipeline.runtime.frames import HelpFormatter, add_face_options, classify_boxes, open_models

CROP_FACTOR = 3  # an image at most this many times the model's input size is taken as a cropped face


@dataclass
class Found:
    file: str
    face: int | None  # None: no face in this image
    box: tuple[int, int, int, int] | None
    outputs: np.ndarray | None  # class probabilities, then target values (Classifier.columns)


def expand(paths: list[str]) -> list[Path]:
    """Files as given, folders walked for images, globs expanded; in order, without repeats."""
    found: list[Path] = []
    for given in paths:
        if any(ch in given for ch in "*?[") and not Path(given).exists():  # photo[1].png may be a file's own name
            matches = sorted(Path(m) for m in glob.glob(given, recursive=True))
            if not matches:
                raise PipelineError(f"{given}: the pattern matches no file")
            found += [m for m in matches if m.is_file()]
        elif Path(given).is_dir():
            found += sorted(p for p in Path(given).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif Path(given).is_file():
            found.append(Path(given))
        else:
            raise PipelineError(f"{given}: no such file or folder")
    return list(dict.fromkeys(found))


SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I")  # PIL's convert("RGB") clips these to white


def read_rgb(path: Path) -> np.ndarray:
    """The image as 8-bit RGB, upright by its EXIF; 16-bit grayscale scaled down to 8 bits rather than clipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on odd metadata: the pixels still read, or an error says why
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode not in SIXTEEN_BIT_GRAY:
                return np.asarray(image.convert("RGB"))
            pixels = np.asarray(image).astype(np.uint32)
    if pixels.max(initial=0) > 0xFFFF:
        raise ValueError(f"{image.mode} pixels above 16 bits; convert the image to 8 bits")
    return np.repeat((pixels >> 8).astype(np.uint8)[..., None], 3, axis=2)


def predict(files: list[Path], args: argparse.Namespace) -> tuple[list[Found], list[str], Classifier]:
    """Every face of every file; the files that could not be read; the classifier that labelled them."""
    classifier, detector = open_models(args)
    found, skipped, crops, crop_rows = [], [], [], []
    for path in files:
        try:
            rgb = read_rgb(path)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            skipped.append(f"{path}: {error}")
            continue
        height, width = rgb.shape[:2]
        is_crop = args.faces is True or (
            args.faces is None and max(height, width) <= CROP_FACTOR * classifier.info.image_size
        )
        if is_crop:
            crop_rows.append(Found(str(path), 0, (0, 0, width, height), None))
            found.append(crop_rows[-1])
            crops.append(classifier.face_input(rgb))
            continue
        frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        boxes, outputs = classify_boxes(frame, detector(frame), classifier, args.margin)
        found += [Found(str(path), i, box, o) for i, (box, o) in enumerate(zip(boxes, outputs))] or [
            Found(str(path), None, None, None)
        ]
    if crops:  # classified together: one batch instead of a run per file
        for row, outputs in zip(crop_rows, classifier.outputs(np.stack(crops))):
            row.outputs = outputs
    return found, skipped, classifier


def table(found: list[Found], classifier: Classifier) -> pd.DataFrame:
    classes, targets = classifier.classes, classifier.targets
    records = []
    for row in found:
        box = row.box or (None,) * 4
        record = {"file": row.file, "face": row.face, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}
        if row.outputs is None:
            record["label"] = None
            record.update(dict.fromkeys([*classes, *targets]))
        else:
            record["label"] = classifier.label(row.outputs)
            record.update({name: round(float(value), 5) for name, value in zip([*classes, *targets], row.outputs)})
        records.append(record)
    return pd.DataFrame(records, columns=["file", "face", "x1", "y1", "x2", "y2", "label", *classes, *targets]).astype(
        {"face": "Int64", "x1": "Int64", "y1": "Int64", "x2": "Int64", "y2": "Int64"}
    )


def write(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".json":
            tmp.write_text(json.dumps(json.loads(frame.to_json(orient="records")), indent=1) + "\n")
        else:
            frame.to_csv(tmp, index=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline predict", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs ('shots/*.jpg')")
    parser.add_argument("--out", type=Path, help="write the table as .csv or .json")
    parser.add_argument(
        "--faces",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--faces: every image is one cropped face; --no-faces: detect faces in every image (default: by size)",
    )
    add_face_options(parser, variant="full")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--out must end in .csv or .json, got {args.out.name}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is not None:
        check_writable(args.out, "--out")  # before the work, which an unwritable output would lose
    files = expand(args.paths)
    if not files:
        raise PipelineError(f"no image files in {' '.join(args.paths)} (looked for {' '.join(sorted(IMAGE_SUFFIXES))})")
    found, skipped, classifier = predict(files, args)
    classes, targets = classifier.classes, classifier.targets
    result = table(found, classifier)
    if len(result):
        shown = result[["file", "face", "x1", "y1", "x2", "y2", "label"]].assign(
            probability=result[classes].astype(float).max(axis=1).round(3)
        )
        shown[targets] = result[targets].astype(float).round(3)
        print(shown.astype(object).where(shown.notna(), "-").to_string(index=False))
    if args.out is not None:
        write(result, args.out)
        print(f"predict: {len(result)} rows → {args.out}")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if skipped:
        print(f"predict: {len(skipped)} of {len(files)} files could not be read (listed above)", file=sys.stderr)
    return 1 if skipped else 0
