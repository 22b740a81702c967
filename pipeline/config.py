"""The one typed view of ``params.yaml``.

Every stage reads its settings through :func:`load_config`; nothing else parses the params file.
Unknown keys are errors, so a typo in ``params.yaml`` never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.files import read_json

PARAMS_FILE = "params.yaml"


class PipelineError(ValueError):
    """Bad input to a stage; the message names the file or value and the fix."""


class ConfigError(PipelineError):
    """A value in params.yaml that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class DataConfig:
    # A competition archive (.zip) or folder in Kaggle's image layout; the default is the
    # synthetic competition that the `synthesize` stage writes.
    source: str = "data/synthetic/competition"
    image_size: int = 48  # FER-2013's native size; other sources are resized to it
    channels: int = 1  # 1 = grayscale, 3 = RGB
    drop_classes: tuple[str, ...] = ()  # e.g. ("disgust",) for the common 6-class FER
    merge_classes: dict[str, str] = field(default_factory=dict)  # {from: into}


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    train_per_class: int = 200  # before the class imbalance below is applied
    test_size: int = 600
    image_size: int = 48
    label_noise: float = 0.05  # fraction of train labels replaced by a random class
    duplicate_fraction: float = 0.03  # train images repeated verbatim, as FER-2013 has them
    spread: float = 1.0  # per-face feature variation; lower is an easier task (tests use 0.3)


@dataclass(frozen=True)
class FoldsConfig:
    # The fold numbers, 0..K-1; K is their count. A list because dvc.yaml runs `train` once per id.
    ids: tuple[int, ...] = (0, 1, 2)
    seed: int = 42
    # Optional CSV with columns id,group (e.g. subject ids): rows of one group share a fold.
    groups_csv: str | None = None

    def __post_init__(self) -> None:
        if list(self.ids) != list(range(len(self.ids))) or len(self.ids) < 2:
            raise ConfigError(f"folds.ids={list(self.ids)} must be 0, 1, ..., K-1 with K >= 2 (for K=5: [0, 1, 2, 3, 4])")

    @property
    def k(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one backbone's training run: the `train` defaults with its overrides."""

    model: str = "resnet18"  # timm model name
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    drop_rate: float = 0.0
    drop_path_rate: float | None = None  # None: the model's own default (not all models take it)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float | None = None  # None: no weight EMA
    input_size: int | None = None  # None: the prepared image size; else resized on the fly
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    channels_last: bool = False
    init_checkpoint: str | None = None  # local weights file to start from (no hub downloads)
    checkpoint: str = "best"  # best: keep the best validation epoch; last: the final one
    eval_every: int = 1  # score the validation fold every N epochs (and after the last)
    augment: tuple[dict, ...] = ()  # albumentations transforms: [{Name: {kwargs}}, ...]
    augment_strength: float = 1.0  # multiplies every transform's probability p (capped at 1)
    tta: tuple[dict, ...] = ({},)  # views: {hflip: bool, shift: [dx, dy], scale: s}; {} = identity
    workers: int = 1  # data-loader processes that run the augmentations
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "precision": self.precision in ("fp32", "bf16", "fp16"),
            "checkpoint": self.checkpoint in ("best", "last"),
            "workers": self.workers >= 0,
            "eval_every": self.eval_every >= 1,
            "tta": len(self.tta) >= 1,
            "augment_strength": self.augment_strength >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"train.{key}={getattr(self, key)!r} is out of range; see the comment beside it in params.yaml")


PRUNERS = ("auto", "median", "successive_halving", "hyperband", "wilcoxon", "none")


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = True  # false: `train` uses the values in params as they are
    n_trials: int = 6  # finished trials (complete or pruned) the study should hold per backbone
    timeout: float | None = None  # seconds one worker may spend; None: no limit
    epochs: int = 4  # training budget of one trial, per fold
    folds: tuple[int, ...] = (0,)  # folds whose held-out accuracy is the objective
    # auto: median for one fold (reports per epoch), wilcoxon for several (reports per fold)
    pruner: str = "auto"
    sampler_seed: int = 0
    # null: a journal file in tuning/ (no server; optuna-dashboard opens it). Or any RDB URL such as
    # postgresql://user:pass@host/db for workers on several machines. $OPTUNA_STORAGE overrides both.
    storage: str | None = None
    heartbeat_seconds: float = 20.0  # a running trial refreshes its heartbeat this often
    grace_seconds: float = 120.0  # a RUNNING trial silent this long belonged to a dead worker: FAIL
    # name: {low, high[, log]} or {choices: [...]}; names are `train` keys
    space: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise ConfigError(f"tune.pruner={self.pruner!r} is unknown; use one of {list(PRUNERS)}")
        if self.n_trials < 1 or self.epochs < 1 or not self.folds:
            raise ConfigError("tune.n_trials and tune.epochs must be >= 1 and tune.folds non-empty")
        tunable = {f.name for f in fields(TrainConfig)}
        for name, spec in self.space.items():
            if name not in tunable:
                raise ConfigError(f"tune.space.{name} is not a `train` setting; tunable: {sorted(tunable)}")
            if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
                raise ConfigError(f"tune.space.{name}={spec!r} needs {{low, high[, log]}} or {{choices: [...]}}")


@dataclass(frozen=True)
class EnsembleConfig:
    method: str = "greedy"  # greedy forward selection with replacement on OOF log-loss
    max_steps: int = 30  # selection rounds of the greedy blend

    def __post_init__(self) -> None:
        if self.method != "greedy":
            raise ConfigError(f"ensemble.method={self.method!r} is unknown; use 'greedy'")


@dataclass(frozen=True)
class Config:
    data: DataConfig
    synthetic: SyntheticConfig
    folds: FoldsConfig
    train: TrainConfig  # defaults shared by every backbone
    backbones: dict[str, dict[str, Any]]  # run name -> overrides of `train`
    tune: TuneConfig
    ensemble: EnsembleConfig

    def backbone(self, name: str) -> TrainConfig:
        """The resolved settings of one backbone run, defaults overridden by its own entry."""
        if name not in self.backbones:
            raise ConfigError(f"backbone {name!r} is not in params.yaml `backbones` (known: {', '.join(self.backbones)})")
        overrides = dict(self.backbones[name] or {})
        overrides.setdefault("model", name)
        return _build(TrainConfig, {**dataclasses.asdict(self.train), **overrides}, f"backbones.{name}")


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    raw = yaml.safe_load(path.read_text()) or {}
    return config_from_dict(raw, where=str(path))


def config_from_dict(raw: dict[str, Any], where: str = PARAMS_FILE) -> Config:
    sections = {
        "data": DataConfig,
        "synthetic": SyntheticConfig,
        "folds": FoldsConfig,
        "train": TrainConfig,
        "tune": TuneConfig,
        "ensemble": EnsembleConfig,
    }
    unknown = set(raw) - set(sections) - {"backbones"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted([*sections, 'backbones'])}")
    built = {name: _build(cls, raw.get(name) or {}, name) for name, cls in sections.items()}
    backbones = raw.get("backbones") or {}
    if not isinstance(backbones, dict) or not backbones:
        raise ConfigError(f"{where}: `backbones` must map at least one run name to its settings")
    config = Config(backbones=backbones, **built)
    for name in backbones:
        config.backbone(name)  # fail now, not mid-pipeline, on a bad override
    return config


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    coerced = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    return cls(**coerced)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """YAML gives lists and ints where the dataclass wants tuples and floats; convert, or refuse."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def tuned_config(base: TrainConfig, tuned_file: Path | None) -> TrainConfig:
    """`base` with the best parameters found by `tune`, when tuning was on."""
    if tuned_file is None:
        return base
    tuned = read_json(tuned_file)
    return dataclasses.replace(base, **tuned["best_params"]) if tuned.get("enabled") else base
