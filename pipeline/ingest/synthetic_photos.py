"""The synthetic faces as a photo competition: each drawn face is worn by a real face photo (scikit-image's
astronaut, which ships inside the package) placed somewhere in a larger RGB scene, as a face sits in a photo.

A face detector finds the photo's face; the class is in the drawn features blended over it. Trained on whole
scenes, a model sees each face at a fraction of the pixels; trained on crops (data.face_crop), at full size.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

# The astronaut's face in the 512 px photo (x1, y1, x2, y2), as CenterFace finds it.
PORTRAIT_FACE = (185, 63, 268, 174)
FACE_ALPHA = 0.75  # how strongly the drawn features cover the photo's face
SCENE_WIDTH = (3.0, 4.5)  # scene width over the face's side, uniform
ASPECTS = (0.75, 1.0, 4 / 3)  # scene height over width


@functools.cache
def portrait() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_in_scene(rng: np.random.Generator, face: np.ndarray) -> np.ndarray:
    """A BGR scene holding the portrait, its face `face`-sized (a grayscale drawn face) and wearing it."""
    side = face.shape[0]
    x1, y1, x2, y2 = PORTRAIT_FACE
    scale = side / max(x2 - x1, y2 - y1) * rng.uniform(0.95, 1.1)
    photo = cv2.resize(portrait(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        photo, x1, x2 = photo[:, ::-1], portrait().shape[1] - x2, portrait().shape[1] - x1
    center_x, center_y = round((x1 + x2) / 2 * scale), round((y1 + y2) / 2 * scale)
    _wear(photo, face, center_x, center_y)
    width = round(side * rng.uniform(*SCENE_WIDTH))
    height = round(width * rng.choice(ASPECTS))
    scene = _background(rng, height, width)
    face_x = rng.uniform(0.25, 0.75) * width  # where the face's centre lands in the scene
    face_y = rng.uniform(0.3, 0.6) * height
    _paste(scene, photo, round(face_x) - center_x, round(face_y) - center_y)
    lit = scene * rng.uniform(0.8, 1.15) + rng.normal(0, 4, size=scene.shape)
    return np.clip(lit, 0, 255).astype(np.uint8)


def _wear(photo: np.ndarray, face: np.ndarray, center_x: int, center_y: int) -> None:
    """Blend the drawn face over the photo's face, inside an oval that fades at its edge."""
    side = face.shape[0]
    mask = np.zeros((side, side), np.float32)
    cv2.ellipse(mask, (side // 2, side // 2), (int(side * 0.36), int(side * 0.46)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), side * 0.05) * FACE_ALPHA
    (rows, cols), patch = _overlap(photo.shape, face.shape, center_y - side // 2, center_x - side // 2)
    alpha = mask[patch]
    # Brightness only: the skin keeps the photo's colour, as a face does.
    ycrcb = cv2.cvtColor(np.ascontiguousarray(photo[rows, cols]), cv2.COLOR_BGR2YCrCb)
    ycrcb[..., 0] = ycrcb[..., 0] * (1 - alpha) + face[patch] * alpha
    photo[rows, cols] = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A room's worth of colour: two colours in a gradient at a random angle, with grain."""
    a, b = rng.uniform(20, 235, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    t = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    return a * (1 - t) + b * t + rng.normal(0, 6, size=(height, width, 3))


def _paste(scene: np.ndarray, photo: np.ndarray, left: int, top: int) -> None:
    inside, patch = _overlap(scene.shape, photo.shape, top, left)
    scene[inside] = photo[patch]


def _overlap(canvas: tuple[int, ...], patch: tuple[int, ...], top: int, left: int) -> tuple[tuple, tuple]:
    """Where a patch placed at (top, left) overlaps a canvas: (rows, columns) of the canvas, and of the patch."""
    rows = slice(max(top, 0), min(top + patch[0], canvas[0]))
    cols = slice(max(left, 0), min(left + patch[1], canvas[1]))
    return (rows, cols), (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
