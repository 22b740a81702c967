"""The model bundle: the ensemble a submission used, in files that need neither the workspace nor params.yaml.

The `bundle` stage writes bundle/ensemble.onnx (every fold model of every member the blend kept,
their test-time views and blend weights, in one graph: uint8 faces in, class probabilities out, and
the regression targets' values, e.g. valence and arousal, when the data had them),
bundle/fast.onnx (one fold model per member, or of a student that scores higher so, no test-time views) and
bundle/bundle.json (what the
graphs carry in their metadata, for people). `predict` and `video` read only the .onnx file, so a
copied ensemble.onnx works on its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import decisions
from pipeline.evaluation.ordinal import GRADE, classes_at, grades_of
from pipeline.evaluation.thresholds import at_thresholds

FORMAT = "pipeline-bundle/1"
METADATA_KEY = "bundle"  # the ONNX metadata_props entry that holds BundleInfo as JSON
PROBABILITIES, TARGETS = "probabilities", "targets"  # the graphs' outputs: N×classes, and N×targets when info.targets
FULL, FAST = "ensemble.onnx", "fast.onnx"
DEFAULT_FOLDER = Path("bundle")


@dataclass(frozen=True)
class Member:
    name: str  # the backbone's run name in params.yaml
    model: str  # timm model name
    weight: float  # blend weight
    folds: tuple[int, ...]
    input_size: int | None  # None: the model reads image_size pixels
    tta: tuple[dict, ...]
    plain_view: dict = field(default_factory=dict)  # what the fast graph scores: {} or a crop model's centre window
    # How the member's models read pixels (train.normalize): mean and std as fractions of 255, one value or one per
    # channel, and how images are resized to input_size. None: the data's (BundleInfo.pixel_mean, pixel_std).
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class BundleInfo:
    classes: list[str]
    image_size: int
    channels: int
    pixel_mean: float
    pixel_std: float
    members: tuple[Member, ...]
    fast: bool = False  # True in fast.onnx: one fold model per member (or a student's alone), no test-time views
    targets: list[str] = field(default_factory=list)  # regression targets (valence, arousal) the graph also predicts
    multi_label: bool = False  # each class's probability on its own (sigmoid), not one distribution (softmax)
    # How the submission decided its labels where not by the most probable class (ensemble/weights.json): an
    # ordinal ensemble's cuts of the regressed grade, a multi-label ensemble's per-class thresholds.
    cuts: list[float] | None = None
    thresholds: list[float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # OOF accuracy, data source, fingerprint
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, where: str) -> BundleInfo:
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise PipelineError(
                    f"{where}: bundle format {raw.get('format')!r}, expected {FORMAT!r}; rebuild it with `dvc repro "
                    "bundle`"
                )
            members = tuple(Member(**{**m, **_as_tuples(m)}) for m in raw.pop("members"))
            return cls(**raw, members=members)
        except (ValueError, TypeError, KeyError) as error:
            raise PipelineError(
                f"{where}: unreadable bundle metadata ({error}); rebuild it with `dvc repro bundle`"
            ) from error


def decided_label(outputs: np.ndarray, info: BundleInfo) -> str:
    """The label the submission gives one image's graph outputs (class probabilities, then target values): the most
    probable class; an ordinal bundle's grade cut at its cuts; a multi-label bundle's classes at its thresholds
    (at 0.5 without), separated by spaces."""
    count = len(info.classes)
    probs = outputs[None, :count]
    if info.multi_label:
        decided = decisions(probs if info.thresholds is None else at_thresholds(probs, np.array(info.thresholds)))
        return " ".join(name for name, on in zip(info.classes, decided[0]) if on)
    if info.cuts is not None:
        grade = grades_of(outputs[count + info.targets.index(GRADE)], count)
        return info.classes[int(classes_at(grade, np.array(info.cuts)))]
    return info.classes[int(probs.argmax())]


def _as_tuples(member: dict) -> dict:
    """A member's lists as JSON wrote them, back as the tuples Member holds."""
    listed = ("folds", "tta", "pixel_mean", "pixel_std")
    return {key: tuple(member[key]) for key in listed if member.get(key) is not None}


def bundle_file(path: str | Path, fast: bool) -> Path:
    """The .onnx file to load: `path` itself whatever `fast` says, or FULL/FAST inside the bundle folder `path`."""
    path = Path(path)
    if path.is_dir():
        path = path / (FAST if fast else FULL)
    if not path.is_file():
        raise PipelineError(
            f"no model bundle at {path}; run `dvc repro bundle` (or `make run`) first, or pass --model <bundle folder "
            "or .onnx file>"
        )
    return path
