"""A Hugging Face hub cache made on disk, laid out as huggingface_hub lays out what it downloads, so that weights
load offline exactly as a machine with internet would load them after one download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file


def fabricate(hub_cache: Path, repo_id: str, state_dict: dict[str, torch.Tensor]) -> str:
    """Write `state_dict` as `repo_id`'s model.safetensors at its main revision under `hub_cache` (HF_HOME/hub);
    returns the revision's commit hash."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({name: tensor.contiguous() for name, tensor in state_dict.items()}, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit
