"""A model bundle loaded for use: face crops in, class probabilities out, on onnxruntime.

Needs neither torch nor timm: only the .onnx file, whose metadata says the classes, the image size
and how the faces must be prepared.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.ingest.images import to_model_input
from pipeline.machine import available_cores
from pipeline.runtime.bundle_format import METADATA_KEY, PROBABILITIES, TARGETS, BundleInfo, bundle_file, decided_label
from pipeline.runtime.sessions import cpu_session

BATCH = 256  # faces per run: bounds the activations' memory when a whole test set is classified at once
_ort_errors = ort.capi.onnxruntime_pybind11_state
LOAD_ERRORS = (_ort_errors.Fail, _ort_errors.InvalidArgument, _ort_errors.InvalidProtobuf, _ort_errors.NoSuchFile)


def input_dtype(session: ort.InferenceSession) -> type:
    """Bundles read uint8 faces; the export stage's graphs read float pixel values, which TensorRT parses."""
    return np.float32 if session.get_inputs()[0].type == "tensor(float)" else np.uint8


def read_info(session: ort.InferenceSession, path: Path) -> BundleInfo:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise PipelineError(
            f"{path} is an ONNX file without bundle metadata; give the bundle folder (bundle/) or its ensemble.onnx"
        )
    return BundleInfo.from_json(props[METADATA_KEY], str(path))


class Classifier:
    """The ensemble of a bundle (or its fast variant) on the CPU."""

    def __init__(self, path: str | Path, fast: bool = False, threads: int | None = None):
        self.path = bundle_file(path, fast)
        self.threads = threads or available_cores()
        try:
            self.session = cpu_session(str(self.path), self.threads)
        except LOAD_ERRORS as error:
            raise PipelineError(
                f"{self.path}: onnxruntime cannot load it ({error}); rebuild the bundle with `dvc repro bundle`"
            ) from error
        self.info = read_info(self.session, self.path)
        self.input_dtype = input_dtype(self.session)
        self.output_names = [PROBABILITIES, TARGETS] if self.info.targets else [PROBABILITIES]

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def face_input(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB (or gray) face crop of any size → the uint8 array the models read."""
        return to_model_input(Image.fromarray(rgb), self.info.image_size, self.info.channels)

    @property
    def targets(self) -> list[str]:
        """Regression targets (e.g. valence, arousal) the bundle predicts beside the classes; [] when none."""
        return self.info.targets

    def label(self, outputs: np.ndarray) -> str:
        """The label one image's `outputs` row gets, decided as the submission decided (bundle_format.decided_label)."""
        return decided_label(outputs, self.info)

    @property
    def columns(self) -> list[str]:
        """What each column of `outputs` holds: the class probabilities, then the target values."""
        return [*self.classes, *self.targets]

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces N×S×S (gray) or N×S×S×C, any N (a memmap too) → float32 N×classes."""
        return self.outputs(faces)[:, : len(self.classes)]

    def outputs(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces N×S×S (gray) or N×S×S×C → float32 N×columns: class probabilities, then target values."""
        expected = (self.info.image_size, self.info.image_size, self.info.channels)
        accepted = {expected, expected[:2]} if self.info.channels == 1 else {expected}
        if faces.shape[1:] not in accepted:
            raise PipelineError(
                f"faces of shape {faces.shape[1:]} given to a bundle that reads {expected}; use Classifier.face_input"
            )
        outputs = [np.zeros((0, len(self.columns)), np.float32)]
        for start in range(0, len(faces), BATCH):
            chunk = (
                np.ascontiguousarray(faces[start : start + BATCH], dtype=np.uint8)
                .reshape(-1, *expected)
                .astype(self.input_dtype, copy=False)
            )
            outputs.append(np.concatenate(self.session.run(self.output_names, {"faces": chunk}), axis=1))
        return np.concatenate(outputs)


def latency_ms(path: Path, face: np.ndarray, threads: int, runs: int) -> float:
    """Median milliseconds of one run on one face (S×S×C) at batch 1 with `threads` threads.

    What a kiosk or robot classifying one face at a time sees; after as many warm-up runs as timed ones.
    """
    session = cpu_session(str(path), threads)
    feed = {session.get_inputs()[0].name: face[None].astype(input_dtype(session))}
    for _ in range(runs):  # warm-up: memory arenas and kernel choices settle in the first runs
        session.run(None, feed)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - started)
    return round(1000 * float(np.median(seconds)), 3)
