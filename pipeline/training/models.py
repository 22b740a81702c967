"""Model factory, device and precision choices, weight files.

A model starts from scratch or from the weights `pretrained` names (pipeline/training/pretrained.py: the
Hugging Face cache or a local file), which timm adapts to the input channels and class count.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from pathlib import Path
from typing import Any

import timm
import timm.optim
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pipeline.training.face_nets  # noqa: F401  (registers the small-face backbones in timm)
from pipeline.config import AUTO, Config, TrainConfig
from pipeline.errors import ConfigError
from pipeline.files import atomic_path
from pipeline.training.augment import build_augment
from pipeline.training.pretrained import resolve

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_model_name(name: str, where: str = "params.yaml") -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.7)
        raise ConfigError(
            f"{where}: unknown timm model {name!r}; similar names: {close or 'none'} (see timm.list_models())"
        )


def check_optimizer_name(name: str, where: str = "params.yaml") -> None:
    known = timm.optim.list_optimizers()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5)
        raise ConfigError(
            f"{where}: unknown optimizer {name!r}; similar names: {close or 'none'} (see timm.optim.list_optimizers())"
        )


def create_model(config: TrainConfig, in_chans: int, num_classes: int) -> torch.nn.Module:
    check_model_name(config.model)
    options: dict[str, Any] = {"in_chans": in_chans, "num_classes": num_classes, "drop_rate": config.drop_rate}
    if config.drop_path_rate is not None:
        options["drop_path_rate"] = config.drop_path_rate
    weights = resolve(config)
    if weights is not None:
        # timm's pretrained loader adapts the stem to in_chans and drops a classifier of another size.
        overlay: dict[str, Any] = {"file": str(weights.file)}
        if weights.local:
            overlay["num_classes"] = weights.classifier_rows(config.model)
        return timm.create_model(config.model, pretrained=True, pretrained_cfg_overlay=overlay, **options)
    try:
        return timm.create_model(config.model, pretrained=False, **options)
    except TypeError as error:  # e.g. drop_path_rate on a model that has no drop path
        raise ConfigError(f"timm model {config.model!r} rejects an option from params.yaml: {error}") from error


def model_on(config: TrainConfig, in_chans: int, num_outputs: int, device: torch.device) -> torch.nn.Module:
    """A fresh model on `device`, in the memory format the config trains with."""
    return on_device(create_model(config, in_chans, num_outputs), config, device)


def on_device(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """`model` on `device`, in the memory format `config` trains (and so predicts) with."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == AUTO:
        raise ConfigError(
            "precision 'auto' reached autocast unresolved: use the settings the model trained with "
            "(FoldRun.config, run.json's `config`), or resolve it with pipeline.training.speed.resolve_speed_settings"
        )
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any]) -> None:
    """Safetensors file whose metadata says how the weights were made (config, data, epoch)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={key: json.dumps(value) for key, value in metadata.items()})


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    model.load_state_dict(load_file(str(path)))
    return model


# Keys that fold models written before them lack, with what those models did.
WRITTEN_BEFORE = {"normalize": "data"}


def saved_settings(path: str | Path) -> tuple[TrainConfig, list[str]]:
    """The settings a fold model trained with (precision and channels-last as resolved) and its target names,
    from its weight file's metadata."""
    with safe_open(str(path), framework="pt") as weights:
        metadata = weights.metadata()
    saved = {**WRITTEN_BEFORE, **json.loads(metadata["config"])}
    return TrainConfig(**{**saved, "augment": tuple(saved["augment"])}), json.loads(metadata.get("targets", "[]"))


def load_trained(
    path: str | Path, in_chans: int, num_outputs: int, device: torch.device | None = None
) -> tuple[torch.nn.Module, TrainConfig]:
    """A trained fold model in eval mode, and the settings it trained with: the one way every stage after
    `train` rebuilds one (never from `pretrained`, which only started its training). On the CPU as
    stored, or on `device` in the memory format it trained with."""
    config, _ = saved_settings(path)
    model = timm.create_model(config.model, pretrained=False, in_chans=in_chans, num_classes=num_outputs)
    model = load_weights(model, path).eval()
    return (model if device is None else on_device(model, config, device)), config


def check_backbones(config: Config) -> None:
    """Every backbone's timm model name and albumentations transforms, checked before any training.

    `load_config` checks everything that needs no training library; this is the rest, run at the
    start of the stages that train, so a typo in the last backbone fails before the first one trains.
    """
    for name in config.backbones:
        settings = config.backbone(name)
        check_model_name(settings.model, f"backbones.{name}.model")
        check_optimizer_name(settings.optimizer, f"backbones.{name}.optimizer (or train.optimizer)")
        try:
            build_augment(settings.augment, seed=0, strength=settings.augment_strength)
        except ConfigError as error:
            raise ConfigError(f"backbone {name} (train.augment or backbones.{name}.augment): {error}") from None
