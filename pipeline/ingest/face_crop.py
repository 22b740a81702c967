"""data.face_crop: each picture becomes its largest face, found and cropped exactly as `predict` and `video` crop
faces (same detector, margin and square), so a model trained on a photo competition sees at inference what it
learned from. A picture with no face found is kept whole; prepare counts and lists those."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.runtime.faces import (
    DETECT_WIDTH,
    FACE_MARGIN,
    FACE_THRESHOLD,
    MIN_FACE,
    face_crop_box,
    largest_face,
    open_detector,
)


class FaceCropper:
    """Picture → (its largest face's crop, True), or (the picture, False) when no face is found."""

    def __init__(self):
        # One thread: prepare runs one cropper per core, in its decoding processes.
        self.detector = open_detector("auto", 1, DETECT_WIDTH, FACE_THRESHOLD, MIN_FACE)

    def __call__(self, picture: Image.Image) -> tuple[Image.Image, bool]:
        rgb = np.asarray(picture.convert("RGB"))
        box = largest_face(self.detector(np.ascontiguousarray(rgb[..., ::-1])))  # detectors read OpenCV's BGR
        if box is None:
            return picture, False
        return picture.crop(face_crop_box(box, rgb.shape, FACE_MARGIN)), True
