"""Resumable training: one file holding everything a run needs to go on after its last finished epoch.

A checkpoint lives outside the stage's DVC output folder (DVC deletes outputs before it re-runs a
stage), in `checkpoints/<backbone>-fold<k>-<key>.pt`. Its key is a hash of what makes the run: the
resolved TrainConfig, the data fingerprint, the fold and the fold assignment (ids trained on and
held out); `auto` precision and channels-last enter it as written, and a resumed run on the same
machine resolves them as before, from the speed cache (pipeline/training/speed.py). The key is stored inside
the file as well, and a file whose key differs is never resumed. Files are written atomically, so a
run killed mid-write leaves the previous epoch's file.
A run with a time budget keeps its epoch plan beside it (`<checkpoint>.plan.json`, same key; the plan
made again after the first epoch replaces it before that epoch's checkpoint), so a resumed run trains
the epochs it planned instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.files import atomic_path, read_json, write_json

log = logging.getLogger(__name__)
FORMAT = 3  # bump when the saved state's layout changes; older files are then not resumed


@dataclass(frozen=True)
class Checkpoint:
    """Where one run's checkpoint lives and the key that its contents must carry."""

    path: Path
    key: str


def run_key(
    config: TrainConfig,
    metric: str,
    fingerprint: str,
    fold: int,
    train_ids: np.ndarray,
    valid_ids: np.ndarray,
    weights: str | None = None,
    teaching: str | None = None,
) -> str:
    """Hash of everything that decides what a run computes (sha256, hex); `metric` decides the epoch kept, `weights`
    (pipeline/training/pretrained.py's identity) what it started from."""
    described = {"format": FORMAT, "config": asdict(config), "metric": metric, "data": fingerprint, "fold": fold}
    if weights is not None:  # runs from scratch keep the keys they had
        described["weights"] = weights
    if teaching is not None:  # a student's: the teachers' probabilities and the loss's settings
        described["teaching"] = teaching
    digest = hashlib.sha256()
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for ids in (train_ids, valid_ids):
        digest.update(f"|{len(ids)}|".encode())
        digest.update("\n".join(map(str, ids)).encode())
    return digest.hexdigest()


def path_for(folder: str | Path, backbone: str, fold: int, key: str) -> Checkpoint:
    return Checkpoint(Path(folder) / f"{backbone}-fold{fold}-{key[:16]}.pt", key)


def save(checkpoint: Checkpoint, state: dict[str, Any]) -> None:
    """Write `state` (tensors, numbers, strings, lists, dicts) with the key, atomically."""
    with atomic_path(checkpoint.path) as tmp:
        torch.save({"key": checkpoint.key, "format": FORMAT, "state": state}, tmp)


def load(checkpoint: Checkpoint, label: str = "") -> dict[str, Any] | None:
    """The saved state when the file exists and was written by a run with the same key, else None."""
    prefix = f"{label}: " if label else ""
    if not checkpoint.path.exists():
        run = checkpoint.path.name.rsplit("-", 1)[0]  # <backbone>-fold<k>
        others = sorted(str(p) for p in checkpoint.path.parent.glob(f"{run}-*.pt") if p != checkpoint.path)
        if others:
            log.info(
                "%sstarting fresh: %s was written with other settings or data and is not resumed (delete it "
                "if that run is not coming back)",
                prefix,
                ", ".join(others),
            )
        return None
    try:
        saved = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log.warning("%s%s cannot be read (%s); starting fresh", prefix, checkpoint.path, error)
        return None
    if not isinstance(saved, dict) or saved.get("key") != checkpoint.key or saved.get("format") != FORMAT:
        log.info(
            "%s%s was written with other settings or data; not resuming it, starting fresh", prefix, checkpoint.path
        )
        return None
    return saved["state"]


def plan_path(checkpoint: Checkpoint) -> Path:
    return checkpoint.path.with_name(checkpoint.path.name + ".plan.json")


def save_plan(checkpoint: Checkpoint, plan: dict[str, Any]) -> None:
    write_json({"key": checkpoint.key, "plan": plan}, plan_path(checkpoint))


def load_plan(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The plan stored by a run with the same key, else None."""
    path = plan_path(checkpoint)
    saved = read_json(path) if path.exists() else None
    return saved["plan"] if isinstance(saved, dict) and saved.get("key") == checkpoint.key else None


def remove(checkpoint: Checkpoint) -> None:
    checkpoint.path.unlink(missing_ok=True)
    plan_path(checkpoint).unlink(missing_ok=True)


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every global generator the remaining epochs draw from: torch (dropout, drop-path), CUDA,
    numpy (timm's mixup) and Python's `random`."""
    np_state = np.random.get_state(legacy=False)
    version, py_internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {
            **np_state,
            "state": {
                "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                "pos": int(np_state["state"]["pos"]),
            },
        },
        "python": [version, list(py_internal), gauss],
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    np_state = dict(states["numpy"])
    np_state["state"] = {"key": np_state["state"]["key"].numpy().astype(np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    version, py_internal, gauss = states["python"]
    random.setstate((version, tuple(py_internal), gauss))
