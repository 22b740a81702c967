"""The one typed view of ``params.yaml``.

Every stage reads its settings through :func:`load_config`; nothing else parses the params file.
``params.yaml`` is the one place values live: the classes below declare each key's type and the
range it must lie in, not a default, so a key missing from the file is an error that names it, and
so is an unknown key, a value of the wrong type or one out of range. Everything that can be checked
without loading the data or a training library is checked here, before a stage does any work; the
timm model names and albumentations transforms are checked by `check_backbones` at the start of
the first stages that train (tune, train).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.files import read_json

PARAMS_FILE = "params.yaml"
# Backbone run names become DVC stage names, folder names and command-line words.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TTA_KEYS = ("hflip", "shift", "scale", "crop")
RESAMPLING_OPSET = 20  # the first opset in which the TorchScript exporter writes affine_grid and grid_sample
PRECISIONS = ("fp32", "bf16", "fp16")
# `precision` and `channels_last` may be left to measurement on the machine at hand (pipeline/training/speed.py).
AUTO = "auto"
AUGMENT_ON = ("loader", "batch")
# What `augment_on: batch` applies (pipeline/training/batch_augment.py): each transform and the arguments it honours.
BATCH_AUGMENTS = {
    "HorizontalFlip": ("p",),
    "Affine": ("scale", "translate_percent", "rotate", "p"),
    "RandomBrightnessContrast": ("brightness_limit", "contrast_limit", "p"),
    "CoarseDropout": ("num_holes_range", "hole_height_range", "hole_width_range", "fill", "p"),
    "RandomCrop": ("height", "width", "p"),
}
# Transforms that change the image size: they apply to every image (p 1, whatever augment_strength), or a
# batch would hold images of two sizes.
SIZE_CHANGING = ("RandomCrop",)
MIN_LOW_RES_SIDE = (
    8  # px: progressive resizing's smaller images, as input_size's least (nets with four 2× pools need some side left)
)
PRUNERS = ("auto", "median", "successive_halving", "hyperband", "wilcoxon", "none")
LAYOUTS = ("auto", "class_folders", "label_table", "pixel_table")
# How the regression targets (valence, arousal) are scored in training: mean squared error, 1 - concordance
# correlation (CCC, the AffectNet measure), or their sum.
TARGET_LOSSES = ("mse", "ccc", "mse+ccc")
# What training does about classes of very different sizes (pipeline/training/class_balance.py).
CLASS_BALANCES = ("none", "weights", "sampler", "logit_adjustment")
# The sample forms the synthetic competition writes: pipeline/data.py's LABEL_FORM and PROBABILITY_FORM (seven
# classes, so never the two-class binary form).
SYNTHETIC_FORMS = ("label", "probability")
# What the synthetic competition asks: single_label (seven expressions, class folders), ordinal (smile grades 0-4
# in a label table, as APTOS ships its grades) or multi_label (facial attributes, several per face).
NORMALIZATIONS = ("data", "pretrained")  # train.normalize
SYNTHETIC_TASKS = ("single_label", "ordinal", "multi_label")
# competition.metric: auto, or a metric of pipeline/evaluation/metrics.py (tests keep the two lists equal).
METRIC_NAMES = ("auto", "accuracy", "balanced_accuracy", "macro_f1", "mean_f1", "qwk", "rmse", "log_loss", "roc_auc")


Rule = tuple[str, Callable[[Any], bool], str]  # (key, test of its value, what the value must be)


def _between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def inside(value: Any) -> bool:
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return math.isfinite(value) and above and below

    return inside


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def _check_rules(config: Any, rules: list[Rule], where: str) -> None:
    for key, test, requirement in rules:
        value = getattr(config, key)
        if not test(value):
            raise ConfigError(f"{where}.{key}={value!r} is out of range: it must be {requirement}")


# Keys of `train` (and so of each backbone) that earlier params.yaml files had, and where they went:
# an old file then fails with the fix rather than a list of the keys known.
MOVED_KEYS = {
    "tta": "tta is no training setting any more: test-time views live in the top-level `tta` section "
    "(`tta.views`, or `tta.backbones.<name>` for one backbone), which oof@ applies to the saved fold models",
    "checkpoint": "checkpoint is now keep_epoch (last | best)",
    "init_checkpoint": "init_checkpoint is now pretrained (a local weight file, a hub id, true or false)",
    "init_weights": "init_weights is now pretrained (a local weight file, a hub id, true or false)",
}


@dataclass(frozen=True)
class DataConfig:
    source: str  # competition .zip or folder, or data/kaggle/<competition>.zip (downloaded)
    layout: str  # auto, or the layout to read: class_folders | label_table | pixel_table
    train_table: str | None  # the label or pixel table, a path inside the source; None: found
    id_column: str | None  # the train table's column naming the images; None: found from its values
    label_column: str | None  # the train table's label column; None: found
    test_folder: str | None  # the folder of the test images; None: the one other folder holding images
    sample_submission: str | None  # the sample submission's path inside the source; None: found
    class_names: dict[str, str]  # label as written (e.g. a code) -> class name; {} keeps labels as written
    image_size: int  # every image is resized to this square size when decoded
    channels: int  # 1 grayscale, 3 RGB
    face_crop: (
        bool  # each image becomes its largest face, cropped as predict and video crop (pipeline/ingest/face_crop.py)
    )
    drop_classes: tuple[str, ...]
    merge_classes: dict[str, str]  # {from: into}
    # Regression target columns (valence, arousal in [-1, 1]; -2 or empty: missing), used when the data has them.
    targets: tuple[str, ...]
    # Share of the labelled images set aside from every fold and scored by every fold model, as the test images are:
    # the labelled measure of what a fold-averaged submission scores. 0: none.
    holdout_fraction: float

    def __post_init__(self) -> None:
        # YAML reads the codes of `{0: angry}` as numbers; labels are compared as text.
        object.__setattr__(self, "class_names", {str(code): name for code, name in self.class_names.items()})

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("source", lambda v: bool(v.strip()), "a path to the competition .zip or folder"),
                ("layout", lambda v: v in LAYOUTS, f"one of {list(LAYOUTS)}"),
                ("image_size", _between(8, 1024), "between 8 and 1024 pixels"),
                ("channels", lambda v: v in (1, 3), "1 (grayscale) or 3 (RGB)"),
                ("holdout_fraction", _between(0, 0.5), "between 0 (none) and 0.5, e.g. 0.1"),
            ],
            where,
        )
        for key in ("train_table", "id_column", "label_column", "test_folder", "sample_submission"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise ConfigError(
                    f"{where}.{key}={value!r} must be null (found automatically) or a name inside the source"
                )
        for name, into in self.merge_classes.items():
            if not isinstance(name, str) or not isinstance(into, str):
                raise ConfigError(f"{where}.merge_classes: {name!r}: {into!r} must map a class name to a class name")
        for code, name in self.class_names.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(
                    f"{where}.class_names: {code!r}: {name!r} must map a label as written to a class name"
                )
        if len(set(self.class_names.values())) < len(self.class_names):
            raise ConfigError(f"{where}.class_names gives two labels one name; use merge_classes to join classes")
        for name in self.targets:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(
                    f"{where}.targets: {name!r} must be a column name, e.g. [valence, arousal] ([] for none)"
                )
        if len(set(self.targets)) < len(self.targets):
            raise ConfigError(f"{where}.targets={list(self.targets)} names a column twice; list each target once")


@dataclass(frozen=True)
class CompetitionConfig:
    # How the leaderboard scores: what training keeps (keep_epoch: best), tuning maximises, the blend
    # optimises and the report shows. auto: log_loss for a sample submission with one probability column
    # per class, accuracy for one with a label column.
    metric: str

    def validate(self, where: str) -> None:
        _check_rules(self, [("metric", lambda v: v in METRIC_NAMES, f"one of {', '.join(METRIC_NAMES)}")], where)


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int
    train_per_class: int  # before the FER-like class imbalance is applied
    test_size: int
    image_size: int
    label_noise: float  # fraction of labels replaced by a random class
    duplicate_fraction: float  # train images repeated verbatim, as FER-2013 has them
    spread: float  # per-face feature variation; lower is an easier task
    submission_form: str  # label: sample id,label | probability: sample id and one probability column per class
    task: str  # one of SYNTHETIC_TASKS
    photos: bool  # each face worn by a real face photo in a larger RGB scene (pipeline/ingest/synthetic_photos.py)

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("task", lambda v: v in SYNTHETIC_TASKS, f"one of {', '.join(SYNTHETIC_TASKS)}"),
                ("submission_form", lambda v: v in SYNTHETIC_FORMS, f"one of {', '.join(SYNTHETIC_FORMS)}"),
                ("train_per_class", _between(1, 1e6), "at least 1"),
                ("test_size", _between(1, 1e6), "at least 1"),
                ("image_size", _between(16, 512), "between 16 and 512 pixels"),
                ("label_noise", _between(0, 1), "a fraction between 0 and 1"),
                ("duplicate_fraction", _between(0, 1, high_open=True), "a fraction in [0, 1)"),
                ("spread", _between(0, 10), "between 0 and 10"),
            ],
            where,
        )


@dataclass(frozen=True)
class FoldsConfig:
    # The fold numbers, 0..K-1; K is their count. A list because dvc.yaml runs `train` once per id.
    ids: tuple[int, ...]
    seed: int
    groups_csv: str | None  # optional CSV (id,group): rows of one group share a fold
    group_pattern: str | None  # optional regex on each train file name; its first group is the group key

    def validate(self, where: str) -> None:
        if self.group_pattern is not None:
            try:
                compiled = re.compile(self.group_pattern)
            except re.error as error:
                raise ConfigError(
                    f"{where}.group_pattern={self.group_pattern!r} is not a regular expression ({error})"
                ) from None
            if compiled.groups < 1:
                raise ConfigError(
                    f"{where}.group_pattern={self.group_pattern!r} needs a group in parentheses for the key, "
                    "e.g. '^(S[0-9]+)_' for S010_004_00000017.png"
                )
        if list(self.ids) != list(range(len(self.ids))) or len(self.ids) < 2:
            raise ConfigError(
                f"{where}.ids={list(self.ids)} must be 0, 1, ..., K-1 with K >= 2 (for K=5: [0, 1, 2, 3, 4])"
            )

    @property
    def k(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one backbone's training run: the `train` section with the backbone's overrides."""

    epochs: int
    batch_size: int
    optimizer: str  # a timm optimizer name (timm.optim.list_optimizers()): adamw, sgd (Nesterov momentum 0.9), ...
    lr: float
    weight_decay: float
    label_smoothing: float
    warmup_epochs: float
    drop_rate: float
    drop_path_rate: float | None  # None: the model's own default (not all models take it)
    mixup_alpha: float
    cutmix_alpha: float
    ema_decay: float | None  # None: no weight EMA
    average_last_fraction: (
        float  # 0: keep the last epoch's weights; f: the mean of those after each of the last f of the epochs
    )
    # Progressive resizing: the first `low_res_fraction` of the epochs train on images whose side is
    # `low_res_scale` times the full one (cheaper steps, so more epochs fit a budget); the rest, and every scoring, at
    # full size.
    low_res_fraction: float
    low_res_scale: float
    input_size: int | None  # None: the prepared image size; else resized per batch
    precision: str  # fp32 | bf16 | fp16 | auto (the faster of fp32 and bf16, measured: pipeline/training/speed.py)
    channels_last: bool | str  # true | false | auto (measured)
    pretrained: bool | str  # false | true (timm's default weights) | a hub id | a local file: training/pretrained.py
    layer_decay: float | None  # None: one lr; d: each layer group's lr is d times the next's, the classifier's full
    freeze_epochs: int  # the first N epochs train the classifier alone on the pretrained backbone
    normalize: str  # data: the data's pixel mean/std | pretrained: the pretrained weights' own (training/pretrained.py)
    # Which epoch's weights are kept: last, or best on the validation fold, which then scores them too (optimistic OOF).
    keep_epoch: str
    eval_every: int
    augment_strength: float
    augment: tuple[dict, ...]  # albumentations transforms: [{Name: {kwargs}}, ...]
    augment_on: str  # loader: per image, in the loader | batch: the same list batched in torch on the model's device
    workers: int
    eval_batch_size: int
    seed: int
    target_loss_weight: float  # λ: loss = cross-entropy + λ·target loss (when the data has regression targets)
    grade_loss_weight: float  # λ of the grade target an ordinal metric adds (pipeline/evaluation/ordinal.py)
    target_loss: str  # mse | ccc | mse+ccc, on the targets present in a batch (missing ones are masked)
    class_balance: str  # none | weights | sampler | logit_adjustment
    # Wall-clock minutes for one backbone's K fold runs together (budget/K each), so that `dvc repro` ends on
    # time on any machine: `epochs` becomes the upper bound and each run trains what its measured speed fits.
    # None: `epochs` as given.
    time_budget_minutes: float | None
    model: str | None = None  # timm model name; a backbone's defaults to its run name

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("epochs", _between(1, 100_000), "at least 1"),
                ("batch_size", _between(2, 1 << 16), "at least 2"),
                ("lr", _between(0, math.inf, low_open=True, high_open=True), "a learning rate above 0 (e.g. 0.002)"),
                ("weight_decay", _between(0, 10), "0 or more"),
                ("label_smoothing", _between(0, 1, high_open=True), "in [0, 1)"),
                ("warmup_epochs", _between(0, 100_000), "0 or more"),
                ("drop_rate", _between(0, 1, high_open=True), "a probability in [0, 1)"),
                ("drop_path_rate", _optional(_between(0, 1, high_open=True)), "null or a probability in [0, 1)"),
                ("mixup_alpha", _between(0, 100), "0 (off) or more"),
                ("cutmix_alpha", _between(0, 100), "0 (off) or more"),
                (
                    "ema_decay",
                    _optional(_between(0, 1, low_open=True, high_open=True)),
                    "null (off) or in (0, 1), e.g. 0.999",
                ),
                (
                    "average_last_fraction",
                    _between(0, 1),
                    "0 (off) or the fraction of the epochs at the end whose weights are averaged, e.g. 0.25",
                ),
                (
                    "low_res_fraction",
                    _between(0, 1, high_open=True),
                    "0 (off) or the fraction of the epochs at the start trained on smaller images, e.g. 0.5",
                ),
                (
                    "low_res_scale",
                    _between(0, 1, low_open=True, high_open=True),
                    "the smaller images' side over the full side, in (0, 1), e.g. 0.75",
                ),
                ("input_size", _optional(_between(8, 4096)), "null or between 8 and 4096 pixels"),
                ("precision", lambda v: v in (*PRECISIONS, AUTO), f"one of {[*PRECISIONS, AUTO]}"),
                ("channels_last", lambda v: v in (True, False, AUTO), f"true, false or {AUTO}"),
                ("keep_epoch", lambda v: v in ("best", "last"), "last or best"),
                ("eval_every", _between(1, 100_000), "at least 1"),
                ("augment_strength", _between(0, 100), "0 or more"),
                ("augment_on", lambda v: v in AUGMENT_ON, f"one of {list(AUGMENT_ON)}"),
                ("workers", _between(0, 256), "0 or more"),
                ("eval_batch_size", _between(1, 1 << 16), "at least 1"),
                ("model", lambda v: v is None or bool(v.strip()), "a timm model name"),
                (
                    "pretrained",
                    lambda v: isinstance(v, bool) or (isinstance(v, str) and bool(v.strip())),
                    "false, true (timm's default weights for the model), a hub id (timm/<model>.<tag>) or a file",
                ),
                (
                    "layer_decay",
                    _optional(_between(0, 1, low_open=True)),
                    "null (one lr) or in (0, 1], e.g. 0.75: each layer group's lr that times the next's",
                ),
                ("freeze_epochs", _between(0, 100_000), "0 (off) or the epochs that train the classifier alone"),
                ("normalize", lambda v: v in NORMALIZATIONS, f"one of {list(NORMALIZATIONS)}"),
                ("target_loss_weight", _between(0, 1000), "0 (targets not trained) or more, e.g. 1.0"),
                ("grade_loss_weight", _between(0, 1000), "0 (the grade not trained) or more, e.g. 1.0"),
                ("target_loss", lambda v: v in TARGET_LOSSES, f"one of {list(TARGET_LOSSES)}"),
                ("class_balance", lambda v: v in CLASS_BALANCES, f"one of {list(CLASS_BALANCES)}"),
                (
                    "time_budget_minutes",
                    _optional(_between(0, math.inf, low_open=True, high_open=True)),
                    "null (no budget) or minutes above 0",
                ),
            ],
            where,
        )
        if self.low_res_fraction > 0 and self.average_last_fraction + self.low_res_fraction > 1:
            raise ConfigError(
                f"{where}.low_res_fraction={self.low_res_fraction} and "
                f"average_last_fraction={self.average_last_fraction} "
                "overlap: the averaged weights (batch-norm statistics included) would mix epochs on smaller images "
                "with full-size ones; keep their sum at most 1"
            )
        if self.freeze_epochs and self.pretrained is False:
            raise ConfigError(
                f"{where}.freeze_epochs={self.freeze_epochs} trains the classifier alone on a frozen backbone, which "
                f"with pretrained: false holds random weights: set {where}.pretrained, or freeze_epochs: 0"
            )
        if self.normalize == "pretrained" and self.pretrained is False:
            raise ConfigError(
                f"{where}.normalize=pretrained takes the mean, std and resizing of the pretrained weights, and "
                f"pretrained is false: set {where}.pretrained (true or a hub id), or normalize: data"
            )
        if self.average_last_fraction > 0 and self.keep_epoch != "last":
            raise ConfigError(
                f"{where}.average_last_fraction={self.average_last_fraction} keeps the mean of the last epochs' "
                f"weights, so no epoch is picked: set {where}.keep_epoch to last (it is {self.keep_epoch})"
            )
        for entry in self.augment:
            if (
                not isinstance(entry, dict)
                or len(entry) != 1
                or not isinstance(next(iter(entry.values())), (dict, type(None)))
            ):
                raise ConfigError(
                    f"{where}.augment: entry {entry!r} must be a one-key mapping like {{HorizontalFlip: {{p: 0.5}}}}"
                )
            if self.augment_on == "batch":
                _check_batch_augment(entry, f"{where}.augment")
            ((name, kwargs),) = entry.items()
            if name in SIZE_CHANGING and (kwargs or {}).get("p", 1) != 1:
                raise ConfigError(
                    f"{where}.augment: {name} changes the image size, so it applies to every image; "
                    f"remove its p (it is {kwargs['p']})"
                )
            if name == "RandomCrop" and (kwargs or {}).get("height") != (kwargs or {}).get("width"):
                raise ConfigError(
                    f"{where}.augment: RandomCrop {kwargs} must be square (height = width): "
                    "the model is scored on square windows of that side"
                )


def _check_batch_augment(entry: dict, where: str) -> None:
    ((name, kwargs),) = entry.items()
    if name not in BATCH_AUGMENTS:
        raise ConfigError(
            f"{where}: {name} has no batched version (augment_on: batch runs {list(BATCH_AUGMENTS)}); "
            "if it is an albumentations transform, augment_on: loader runs it per image"
        )
    unknown = sorted(set(kwargs or {}) - set(BATCH_AUGMENTS[name]))
    if unknown:
        raise ConfigError(
            f"{where}: augment_on: batch takes only {list(BATCH_AUGMENTS[name])} of {name}, not {unknown}; "
            f"albumentations' other arguments of {name} run with augment_on: loader"
        )
    if not _is_number((kwargs or {}).get("fill", 0)):
        raise ConfigError(f"{where}: {name} fill must be one number under augment_on: batch")


def check_views(views: Any, where: str) -> None:
    """A list of test-time views, each checked; `where` names it in the error."""
    if not isinstance(views, (list, tuple)) or not views:
        raise ConfigError(
            f"{where}={list(views) if isinstance(views, tuple) else views!r} must be a list of at least one view ({{}} "
            "is the image as it is)"
        )
    for view in views:
        _check_tta_view(view, where)


def _check_tta_view(view: Any, where: str) -> None:
    if not isinstance(view, dict):
        raise ConfigError(
            f"{where}: view {view!r} must be a mapping such as {{hflip: true}} ({{}} is the image as it is)"
        )
    unknown = sorted(set(view) - set(TTA_KEYS))
    if unknown:
        raise ConfigError(f"{where}: view {view!r} has unknown key(s) {unknown}; use {list(TTA_KEYS)}")
    shift = view.get("shift", (0, 0))
    checks = [
        ("hflip", isinstance(view.get("hflip", False), bool), "true or false"),
        (
            "shift",
            isinstance(shift, (list, tuple)) and len(shift) == 2 and all(_is_number(s) for s in shift),
            "[dx, dy] in pixels",
        ),
        ("scale", _is_number(view.get("scale", 1.0)) and view.get("scale", 1.0) > 0, "a zoom factor above 0, e.g. 1.1"),
    ]
    for key, ok, requirement in checks:
        if not ok:
            raise ConfigError(f"{where}: view {view!r}: {key} must be {requirement}")
    if "crop" in view:
        crop_checks = [
            (
                "crop",
                isinstance(view["crop"], int) and not isinstance(view["crop"], bool) and view["crop"] >= 8,
                "a window side in pixels, at least 8",
            ),
            ("shift", all(float(s).is_integer() for s in shift), "whole pixels with crop"),
            ("scale", "scale" not in view, "left out with crop (a window is taken, not zoomed)"),
        ]
        for key, ok, requirement in crop_checks:
            if not ok:
                raise ConfigError(f"{where}: view {view!r}: {key} must be {requirement}")


def resamples(view: dict) -> bool:
    """A whole-image view that zooms or moves by a fraction of a pixel, so is resampled (affine_grid and
    grid_sample, which ONNX writes from RESAMPLING_OPSET on); flips, crops and whole-pixel shifts only
    slice and pad the image, which any opset writes."""
    if not view or "crop" in view:
        return False
    dx, dy = view.get("shift", (0, 0))
    return float(view.get("scale", 1.0)) != 1.0 or not (float(dx).is_integer() and float(dy).is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TtaConfig:
    """Test-time views, averaged by `oof@` over each fold model's predictions (never part of training)."""

    views: tuple[
        dict, ...
    ]  # {hflip: bool, shift: [dx, dy], scale: s} or {crop: px, shift, hflip}; {} = the image as it is
    backbones: dict[str, tuple[dict, ...]]  # backbone run name -> its own views, instead of `views`

    def __post_init__(self) -> None:
        # YAML gives each backbone's views as a list; they are compared and hashed as tuples, like `views`.
        backbones = {name: tuple(views) if isinstance(views, list) else views for name, views in self.backbones.items()}
        object.__setattr__(self, "backbones", backbones)

    def validate(self, where: str) -> None:
        for name, views in {"views": self.views, **{f"backbones.{b}": v for b, v in self.backbones.items()}}.items():
            check_views(views, f"{where}.{name}")

    def of(self, backbone: str) -> tuple[dict, ...]:
        """The views a backbone's fold models are scored on."""
        return self.backbones.get(backbone, self.views)


DEFAULT_JOURNAL = Path("tuning/optuna.journal")  # the study's storage when tune.storage is null
STORAGE_ENV = "OPTUNA_STORAGE"  # a storage URL in the environment wins over tune.storage


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool  # false: `train` uses the values in params as they are
    n_trials: int  # finished trials (complete or pruned) the study should hold per backbone
    timeout: float | None  # seconds one worker may spend; None: no limit
    epochs: int  # training budget of one trial, per fold
    folds: tuple[int, ...]  # folds whose held-out score (competition.metric) is the objective
    pruner: str  # auto: median for one fold (reports per epoch), wilcoxon for several (per fold)
    sampler_seed: int
    # null: a journal file in tuning/. Or an RDB URL such as postgresql://user:pass@host/db for
    # workers on several machines. $OPTUNA_STORAGE overrides both.
    storage: str | None
    heartbeat_seconds: float  # a running trial refreshes its heartbeat this often
    grace_seconds: float  # a RUNNING trial silent this long belonged to a dead worker: FAIL
    space: dict[str, dict]  # name: {low, high[, log]} or {choices: [...]}; names are `train` keys

    def storage_url(self) -> str:
        """Where the studies live: $OPTUNA_STORAGE, else tune.storage, else the journal file."""
        return os.environ.get(STORAGE_ENV) or self.storage or str(DEFAULT_JOURNAL)

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("n_trials", _between(1, 1e6), "at least 1"),
                ("timeout", _optional(_between(0, math.inf, low_open=True, high_open=True)), "null or seconds above 0"),
                ("epochs", _between(1, 100_000), "at least 1"),
                ("folds", lambda v: len(v) >= 1, "a non-empty list of fold ids"),
                ("pruner", lambda v: v in PRUNERS, f"one of {list(PRUNERS)}"),
                ("heartbeat_seconds", _between(0, 3600, low_open=True), "seconds above 0"),
                ("grace_seconds", lambda v: v > self.heartbeat_seconds, "more seconds than tune.heartbeat_seconds"),
            ],
            where,
        )
        # A trial trains tune.epochs whatever the budget, so the budget is no setting a trial could score.
        tunable = {f.name for f in fields(TrainConfig)} - {"model", "time_budget_minutes"}
        for name, spec in self.space.items():
            if name not in tunable:
                raise ConfigError(f"{where}.space.{name} is not a `train` setting; tunable: {sorted(tunable)}")
            _check_search_range(spec, f"{where}.space.{name}")


def _check_search_range(spec: Any, where: str) -> None:
    if isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list) and spec["choices"]:
        return
    if isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
        low, high = spec["low"], spec["high"]
        if _is_number(low) and _is_number(high) and low <= high and (not spec.get("log") or low > 0):
            return
    raise ConfigError(
        f"{where}={spec!r} must be {{low, high[, log: true]}} with low <= high (low > 0 for log), "
        f"or {{choices: [...]}} with at least one choice"
    )


@dataclass(frozen=True)
class EnsembleConfig:
    method: str  # greedy forward selection with replacement on OOF log-loss
    max_steps: int  # selection rounds of the greedy blend

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("method", lambda v: v == "greedy", "'greedy'"),
                ("max_steps", _between(1, 100_000), "at least 1 (each step adds one model to the blend)"),
            ],
            where,
        )


@dataclass(frozen=True)
class DistillConfig:
    """A second round: students trained per fold on what that fold's first-round models (the teachers) say."""

    teachers: tuple[str, ...]  # backbones whose fold-k models teach fold k's students, their probabilities averaged
    students: dict[str, dict[str, Any]]  # run name -> overrides of `train`, as in `backbones`
    temperature: float  # both distributions softened by it in the distillation term (Hinton et al. 2015)
    label_weight: float  # α: loss = α·cross-entropy on the labels + (1−α)·T²·KL(teachers ‖ student)
    pseudo_labels: bool  # also train on the test images, with the fold-k teachers' probabilities as their only target
    init_from: str | None  # a teacher whose fold-k weights start fold k's student (same model); None: its own

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("temperature", _between(0, 100, low_open=True), "above 0 (1: the teachers' own probabilities)"),
                ("label_weight", _between(0, 1), "between 0 (the teachers alone) and 1 (the labels alone)"),
            ],
            where,
        )
        if self.students and not self.teachers:
            raise ConfigError(f"{where}.students needs {where}.teachers: the backbones whose fold models teach them")
        for name, overrides in self.students.items():
            _check_run_entry(name, overrides, f"{where}.students")


@dataclass(frozen=True)
class ExportConfig:
    opset: int  # ONNX opset of the export stage's graphs; 11–13 for TensorRT on Jetson-class devices
    int8: bool  # also write int8 graphs (onnxruntime static quantisation, QDQ, per-channel weights)
    calibration_images: int  # train images that calibrate the int8 activation ranges
    max_difference: float  # largest |PyTorch − onnxruntime| class probability accepted on train images
    latency_threads: tuple[int, ...]  # onnxruntime thread counts the latency is measured with
    latency_runs: int  # timed runs per latency figure (the median is reported), after as many warm-up runs
    seed: int  # which train images calibrate

    def validate(self, where: str) -> None:
        _check_rules(
            self,
            [
                ("opset", _between(11, 20), "between 11 and 20 (TensorRT on Jetson-class devices parses 11–13)"),
                ("calibration_images", _between(1, 100_000), "between 1 and 100000"),
                ("max_difference", _between(0, 1, low_open=True), "above 0 and at most 1"),
                (
                    "latency_threads",
                    lambda v: len(v) >= 1 and all(isinstance(t, int) and 1 <= t <= 256 for t in v),
                    "a list of thread counts, e.g. [1, 2]",
                ),
                ("latency_runs", _between(1, 100_000), "at least 1"),
            ],
            where,
        )


SECTIONS = {
    "data": DataConfig,
    "competition": CompetitionConfig,
    "synthetic": SyntheticConfig,
    "folds": FoldsConfig,
    "train": TrainConfig,
    "tta": TtaConfig,
    "tune": TuneConfig,
    "ensemble": EnsembleConfig,
    "distill": DistillConfig,
    "export": ExportConfig,
}


@dataclass(frozen=True)
class Config:
    data: DataConfig
    competition: CompetitionConfig
    synthetic: SyntheticConfig
    folds: FoldsConfig
    train: TrainConfig  # settings shared by every backbone
    backbones: dict[str, dict[str, Any]]  # run name -> overrides of `train`
    tta: TtaConfig
    tune: TuneConfig
    ensemble: EnsembleConfig
    distill: DistillConfig
    export: ExportConfig

    @property
    def members(self) -> list[str]:
        """Every run that scores on OOF and may join the blend: the backbones, then the students."""
        return [*self.backbones, *self.distill.students]

    def backbone(self, name: str) -> TrainConfig:
        """The resolved settings of one backbone (or student) run, `train` overridden by its own entry."""
        runs = {**self.backbones, **self.distill.students}
        if name not in runs:
            raise ConfigError(
                f"backbone {name!r} is not in params.yaml `backbones` or `distill.students` (known: {', '.join(runs)})"
            )
        overrides = dict(runs[name] or {})
        overrides.setdefault("model", name)
        where = f"backbones.{name}" if name in self.backbones else f"distill.students.{name}"
        return _build(TrainConfig, {**dataclasses.asdict(self.train), **overrides}, where)


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return config_from_dict(raw or {}, where=str(path))


def config_from_dict(raw: dict[str, Any], where: str = PARAMS_FILE) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of sections ({', '.join([*SECTIONS, 'backbones'])})")
    known = [*SECTIONS, "backbones"]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}{_did_you_mean(unknown, known)}; known: {known}")
    missing = [name for name in known if name not in raw]
    if missing:
        moved = " (test-time views moved there from train.tta)" if "tta" in missing else ""
        raise ConfigError(
            f"{where}: section(s) {missing} missing{moved}; every setting lives in params.yaml (see the project's "
            "own for each key)"
        )
    built = {name: _build(cls, raw[name], name) for name, cls in SECTIONS.items()}
    backbones = _check_backbones_section(raw["backbones"], where)
    config = Config(backbones=backbones, **built)
    _check_distill(config, where)
    strangers = sorted(set(config.tta.backbones) - set(config.members))
    if strangers:
        raise ConfigError(
            f"{where}: tta.backbones names {strangers}, which `backbones` and `distill.students` do not have "
            f"(known: {config.members})"
        )
    for name in config.members:
        _check_crops_fit(
            config.backbone(name), config.tta.of(name), config.data.image_size, f"{where}: backbones.{name}"
        )  # fail now
        _check_views_export(
            config.tta.of(name), config.export.opset, f"{where}: tta of {name}"
        )  # not after hours of training
    outside = sorted(set(config.tune.folds) - set(config.folds.ids))
    if outside:
        raise ConfigError(
            f"tune.folds {list(config.tune.folds)} names fold(s) {outside} that folds.ids {list(config.folds.ids)} "
            "does not have"
        )
    return config


def random_crop_side(augment: tuple[dict, ...]) -> int | None:
    """The side of the RandomCrop windows in an augment list; None without one."""
    sides = [entry["RandomCrop"]["height"] for entry in augment if "RandomCrop" in entry]
    return sides[-1] if sides else None


def training_side(config: TrainConfig, image_size: int) -> int:
    """The side of the images the model trains on: input_size, else the RandomCrop window, else the prepared size."""
    return config.input_size or random_crop_side(config.augment) or image_size


def _check_crops_fit(train: TrainConfig, views: tuple[dict, ...], image_size: int, where: str) -> None:
    """Training crops and test-time crop views must fit inside the images as prepared."""
    for entry in train.augment:
        ((name, kwargs),) = entry.items()
        if name == "RandomCrop" and max((kwargs or {}).get("height", 0), (kwargs or {}).get("width", 0)) > image_size:
            raise ConfigError(
                f"{where}: augment RandomCrop {kwargs} is larger than data.image_size {image_size}; crop at most that"
            )
    for view in views:
        if view.get("crop", 0) > image_size:
            raise ConfigError(f"{where}: tta view {view} crops more than data.image_size {image_size}")
    side = training_side(train, image_size)
    if train.low_res_fraction > 0 and round(side * train.low_res_scale) < MIN_LOW_RES_SIDE:
        raise ConfigError(
            f"{where}: low_res_scale {train.low_res_scale} shrinks the {side} px training images to "
            f"{round(side * train.low_res_scale)} px; keep them at least {MIN_LOW_RES_SIDE} px "
            f"(low_res_scale ≥ {MIN_LOW_RES_SIDE / side:.2f})"
        )


def _check_views_export(views: tuple[dict, ...], opset: int, where: str) -> None:
    resampled = [view for view in views if resamples(view)]
    if resampled and opset < RESAMPLING_OPSET:
        raise ConfigError(
            f"{where}: tta view(s) {resampled} zoom or shift by a fraction of a pixel, which the export stage's ONNX "
            f"writes only from opset {RESAMPLING_OPSET} on (export.opset is {opset}); set export.opset: "
            f"{RESAMPLING_OPSET}, "
            "or keep to flips, crops and shifts by whole pixels"
        )


def _check_backbones_section(backbones: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(backbones, dict) or not backbones:
        raise ConfigError(
            f"{where}: `backbones` must map at least one run name to its settings, e.g. `backbones: {{resnet18: {{}}}}`"
        )
    for name, overrides in backbones.items():
        _check_run_entry(name, overrides, f"{where}: backbones")
    return {name: dict(overrides or {}) for name, overrides in backbones.items()}


def _check_run_entry(name: Any, overrides: Any, where: str) -> None:
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: run name {name!r} may hold only letters, digits, '_', '.' and '-' "
            "(it names DVC stages, folders and command-line arguments); rename it and set `model:` inside it"
        )
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"{where}.{name} must be a mapping of `train` keys ({{}} for none), got {overrides!r}")


def _check_distill(config: Config, where: str) -> None:
    """Students are trained by `distill@`, on soft targets and unlabelled test images: what that cannot do is refused
    before the first round trains."""
    distill = config.distill
    outside = sorted(set(distill.teachers) - set(config.backbones))
    if outside:
        raise ConfigError(
            f"{where}: distill.teachers names {outside}, which `backbones` does not have "
            f"(known: {list(config.backbones)})"
        )
    if distill.init_from is not None and distill.init_from not in distill.teachers:
        raise ConfigError(
            f"{where}: distill.init_from {distill.init_from!r} is not one of distill.teachers "
            f"{list(distill.teachers)}: a student starts from a teacher's fold model"
        )
    twice = sorted(set(distill.students) & set(config.backbones))
    if twice:
        raise ConfigError(
            f"{where}: {twice} named both in `backbones` and `distill.students`; give the student its own name"
        )
    for name in distill.students:
        student = config.backbone(name)
        if student.mixup_alpha or student.cutmix_alpha:
            raise ConfigError(
                f"{where}: distill.students.{name} mixes images (mixup_alpha/cutmix_alpha), which a student does not: "
                "set both to 0 for it"
            )
        if distill.init_from is not None and student.model != config.backbone(distill.init_from).model:
            raise ConfigError(
                f"{where}: distill.students.{name} is a {student.model}, distill.init_from {distill.init_from} a "
                f"{config.backbone(distill.init_from).model}: a student starts from the weights of its own model only"
            )
        if distill.init_from is not None and student.pretrained is not False:
            raise ConfigError(
                f"{where}: distill.students.{name}.pretrained and distill.init_from both say where it starts; keep one"
            )
        if student.class_balance == "sampler":
            raise ConfigError(
                f"{where}: distill.students.{name}: class_balance sampler draws by label, which pseudo-labelled "
                "test images lack; use weights or logit_adjustment"
            )


def _did_you_mean(unknown: list[str], known: list[str]) -> str:
    guesses = [
        f"{name!r} → {match[0]!r}" for name in unknown if (match := difflib.get_close_matches(str(name), known, n=1))
    ]
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    moved = [MOVED_KEYS[key] for key in unknown if cls is TrainConfig and key in MOVED_KEYS]
    if moved:
        raise ConfigError(f"{where}: {'; '.join(moved)}")
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}{_did_you_mean(unknown, list(known))}; known keys: {sorted(known)}"
        )
    required = [f.name for f in fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
    if required:
        raise ConfigError(
            f"{where}: key(s) {required} missing; every setting lives in params.yaml (see the project's own for each "
            "key)"
        )
    hints = typing.get_type_hints(cls)
    config = cls(**{key: _coerce(value, hints[key], f"{where}.{key}") for key, value in values.items()})
    config.validate(where)
    return config


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """YAML gives lists and ints where the dataclass wants tuples and floats; convert, or refuse."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(options) > 1:  # e.g. bool | str: any of them; `validate` checks the value
            if not isinstance(value, tuple(options)):
                raise ConfigError(f"{where} must be {' or '.join(_TYPE_WORDS[o] for o in options)}, got {value!r}")
            return value
        hint = options[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        return _to_float(value, where)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {_TYPE_WORDS[hint]}, got {value!r}")
    return value


def _to_float(value: Any, where: str) -> float:
    # PyYAML reads 1e-3 (no dot) as text, where DVC's YAML reader sees a number: accept both.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not _is_number(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


_TYPE_WORDS = {int: "a whole number", str: "text", bool: "true or false"}


def tuned_config(base: TrainConfig, tuned_file: Path | None) -> TrainConfig:
    """`base` with the best parameters found by `tune`, when tuning was on."""
    if tuned_file is None:
        return base
    tuned = read_json(tuned_file)
    return dataclasses.replace(base, **tuned["best_params"]) if tuned.get("enabled") else base
