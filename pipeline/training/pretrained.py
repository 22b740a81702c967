"""Where a backbone's starting weights come from (`train.pretrained`, per backbone): nothing (`false`), timm's
default weights for the model (`true`), a Hugging Face hub id (`timm/convnext_nano.in12k_ft_in1k`), or a local
weight file (a finished run's fold model is one, whatever its classes).

Hub weights come through huggingface_hub's own cache (`HF_HOME`, by default ~/.cache/huggingface): a machine
with internet downloads them once, one without (or with `HF_HUB_OFFLINE=1`) reads the cache, and
`python -m pipeline weights MODEL...` fills it on a connected machine. timm then loads the file, adapting the
stem to the data's channels and starting a new classifier for its classes. What a run started from
(:func:`identity`: the hub id at its snapshot's commit, or the file's SHA-256) is part of its resume key and its
run.json; nothing after `train` reads the source weights again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import TrainConfig
from pipeline.errors import ConfigError, PipelineError

HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the hub, preferred first
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
LOCAL_PREFIX = "sha256:"  # a local file's identity: its hash


@dataclass(frozen=True)
class Weights:
    file: Path  # the local weight file timm loads
    identity: str  # hub id@commit, or sha256:<hex> of a local file

    @property
    def local(self) -> bool:
        return self.identity.startswith(LOCAL_PREFIX)

    def classifier_rows(self, model: str) -> int | None:
        """How many outputs the file's classifier has (another competition's classes and targets), so timm keeps
        it only where the new model has as many, and starts a new one otherwise; None: the file has none."""
        import timm

        classifier = timm.models.get_pretrained_cfg(model).classifier
        names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
        shapes = tensor_shapes(self.file)
        rows = [shapes[f"{name}.weight"][0] for name in names if f"{name}.weight" in shapes]
        return rows[0] if rows else None


def hub_id(model_or_id: str) -> str:
    """A hub id as given (`timm/...`, optionally `hf-hub:`-prefixed), or timm's default weights' id for a model name."""
    if "/" in model_or_id:
        return model_or_id.removeprefix(HUB_PREFIX)
    import timm  # here: resolving a file or `false` (the `pretrained` stage, every repro) needs no model library

    config = timm.models.get_pretrained_cfg(model_or_id)
    found = getattr(config, "hf_hub_id", None)
    if not found:
        raise ConfigError(
            f"timm has no hub weights for {model_or_id!r}; give pretrained a hub id (timm/<model>.<tag>) or a local "
            "weight file, or false"
        )
    return found


@dataclass(frozen=True)
class InputStatistics:
    """How a model's input is made from pixel values 0–255: (x/255 - mean) / std per channel, resized (to
    train.input_size) by `interpolation`. One value stands for every channel."""

    mean: tuple[float, ...]  # fractions of 255
    std: tuple[float, ...]
    interpolation: str = "bilinear"  # bilinear | bicubic


RESIZE_MODES = ("bilinear", "bicubic")  # what F.interpolate and ONNX Resize both do; others resize bilinearly


def input_statistics(config: TrainConfig, data_mean: float, data_std: float, channels: int) -> InputStatistics:
    """`normalize: data`: the data's mean and std; `pretrained`: those timm's config gives for the pretrained weights
    (read from timm's registry, nothing downloaded), averaged over the colours for grey data, as timm sums the
    stem's colour filters into one."""
    if config.normalize == "data":
        return InputStatistics((data_mean,), (data_std,))
    value = config.pretrained
    if isinstance(value, str) and is_file_reference(value):
        raise ConfigError(
            f"normalize: pretrained takes the statistics timm publishes for hub weights; pretrained {value!r} is a "
            "file, which carries none (a run's fold model trained on its own data's): set normalize: data"
        )
    import timm

    name = config.model if value is True else hub_id(value).split("/", 1)[-1].partition("@")[0]
    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm's word for a model without a pretrained configuration
        pretrained_cfg = None
    if pretrained_cfg is None:
        raise ConfigError(
            f"normalize: pretrained: timm has no configuration for {name!r}, so its mean and std are unknown; set "
            "normalize: data"
        )
    mean, std = tuple(pretrained_cfg.mean), tuple(pretrained_cfg.std)
    if channels == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    interpolation = pretrained_cfg.interpolation if pretrained_cfg.interpolation in RESIZE_MODES else "bilinear"
    return InputStatistics(mean, std, interpolation)


def is_file_reference(value: str) -> bool:
    return value.endswith(FILE_SUFFIXES) or Path(value).exists()


def resolve(config: TrainConfig) -> Weights | None:
    """The weights a run of `config` starts from; None for `pretrained: false` (from scratch)."""
    value = config.pretrained
    if value is False:
        return None
    if isinstance(value, str) and is_file_reference(value):
        path = Path(value)
        if not path.is_file():
            raise ConfigError(
                f"pretrained {value!r} is not a file; give a .safetensors/.pth weight file, a hub id, true or false"
            )
        return Weights(path.resolve(), f"{LOCAL_PREFIX}{file_sha256(path)}")
    return hub_weights(hub_id(config.model if value is True else value))


def hub_weights(repo_id: str) -> Weights:
    """The hub id's weight file from the cache, downloaded there first when the hub can be reached."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError  # LocalEntryNotFoundError is one

    repo, _, revision = repo_id.partition("@")
    for name in WEIGHT_FILES:
        try:
            file = Path(hf_hub_download(repo, name, revision=revision or None))
        except EntryNotFoundError:  # not cached where the hub is out of reach, or the repository has the other file
            continue
        return Weights(file, f"{repo}@{file.parent.name}")
    raise PipelineError(
        f"pretrained weights {repo_id} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
        f"cannot be reached (offline: HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}); fill the cache on a "
        f"connected machine with `python -m pipeline weights {repo_id}` and copy it here (or set HF_HOME to it)"
    )


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a weight file: from a safetensors header alone, or a PyTorch state dict's (tensors
    only, never code)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return {name: tuple(tensor.shape) for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
