"""The one conversion of a decoded picture to what the models read: uint8, square, gray or RGB.

`prepare` applies it to every competition image and `predict`/`video` to every face crop, so a
face seen at inference is resized exactly as the training images were.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Still-image formats Pillow decodes that competitions ship (GIF and TIFF: the first frame). Matched case-insensitively.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Pillow's reducing_gap: shrink by whole factors first, then resample; sharper than a plain
# bilinear resize when a large photo or face crop becomes 48 pixels, and still fast.
REDUCING_GAP = 3.0


def to_model_input(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """A Pillow image → uint8 array size×size (×channels when channels > 1)."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    return np.asarray(image, dtype=np.uint8)
