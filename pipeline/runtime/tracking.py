"""Faces followed from frame to frame, with their class probabilities (and target values) smoothed over time.

Between detections a face keeps its last box; at each detection, boxes are matched to the faces
already followed by overlap (IoU), so a face keeps its number and its probability history. The
shown probabilities are an exponential moving average, so one odd frame does not flip the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Track:
    number: int
    box: np.ndarray  # x1, y1, x2, y2, score
    outputs: np.ndarray | None = None  # moving average of the classifier's outputs for this face
    missed: int = 0  # detections in a row that did not find this face


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of boxes a (n×4+) and b (m×4+) → n×m."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class Tracks:
    """`smoothing`: the weight of the past in the moving average (0: none; 0.8: about 5 frames)."""

    def __init__(self, smoothing: float, min_overlap: float, max_missed: int):
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing, self.min_overlap, self.max_missed = smoothing, min_overlap, max_missed
        self.active: list[Track] = []
        self._next = 0

    def update(self, boxes: np.ndarray) -> list[Track]:
        """Match a detection's boxes to the followed faces; returns the faces now in view."""
        matched: dict[int, int] = {}  # box index → track index
        if len(boxes) and self.active:
            overlap = iou(boxes, np.stack([t.box for t in self.active]))
            for flat in np.argsort(-overlap, axis=None):
                b, t = np.unravel_index(flat, overlap.shape)
                if overlap[b, t] < self.min_overlap:
                    break
                if b not in matched and t not in matched.values():
                    matched[int(b)] = int(t)
        seen = []
        for b, box in enumerate(boxes):
            if b in matched:
                track = self.active[matched[b]]
                track.box, track.missed = box, 0
            else:
                track = Track(self._next, box)
                self._next += 1
            seen.append(track)
        for t, track in enumerate(self.active):
            if t not in matched.values():
                track.missed += 1
                if track.missed <= self.max_missed:
                    seen.append(track)  # kept a little while: a blink of the detector is not a lost face
        self.active = seen
        return [track for track in seen if track.missed == 0]

    def smooth(self, track: Track, outputs: np.ndarray) -> np.ndarray:
        """The face's moving average after this frame's outputs (probabilities stay a distribution)."""
        if track.outputs is None:
            track.outputs = outputs
        else:
            track.outputs = self.smoothing * track.outputs + (1 - self.smoothing) * outputs
        return track.outputs
