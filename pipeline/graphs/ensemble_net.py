"""The bundle's ensemble as one torch module, and its export to ONNX.

The module repeats, in one forward pass, what the pipeline does to reach the submission: normalise
as training did, resize to each member's input size, average every fold model over its test-time
views, weight the members as the blend did. Its probabilities therefore match ensemble/test.csv up
to rounding and precision; the `bundle` stage checks that it gives the submission's label.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from pipeline.config import RESAMPLING_OPSET, resamples
from pipeline.data import Prepared
from pipeline.errors import MissingInputError, PipelineError
from pipeline.evaluation.predictions import fold_dir
from pipeline.files import atomic_path
from pipeline.runtime.bundle_format import METADATA_KEY, PROBABILITIES, TARGETS, BundleInfo, Member
from pipeline.training.augment import apply_view, plain_view, resize, standardize
from pipeline.training.models import load_trained, saved_settings
from pipeline.training.pretrained import input_statistics
from pipeline.training.target_loss import split_outputs

# 17: the TorchScript exporter's newest well-trodden opset, with grid_sample (zoomed views) and
# everything onnxruntime's CPU provider runs; exports for older runtimes are the export stage's job.
ONNX_OPSET = 17


def load_member(
    models_dir: Path, name: str, weight: float, folds: tuple[int, ...], data: Prepared, views: tuple[dict, ...]
) -> tuple[Member, list[torch.nn.Module]]:
    """A backbone's fold models, in eval mode, and how the bundle applies them (`views`: its `tta`)."""
    paths = [fold_dir(models_dir, name, fold) / "model.safetensors" for fold in folds]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MissingInputError(f"missing fold models {missing}; run `dvc repro train` first")
    _, targets = saved_settings(paths[0])
    if targets != data.target_names:
        raise PipelineError(
            f"{paths[0]} was trained for targets {targets}, the prepared data has {data.target_names}; re-run `dvc "
            "repro`"
        )
    outputs = len(data.classes) + len(targets)
    loaded = [load_trained(path, data.channels, outputs) for path in paths]
    config = loaded[0][1]
    statistics = input_statistics(config, data.pixel_mean, data.pixel_std, data.channels)
    member = Member(
        name,
        config.model,
        weight,
        folds,
        config.input_size,
        tuple(views),
        plain_view(config.augment),
        statistics.mean,
        statistics.std,
        statistics.interpolation,
    )
    return member, [model for model, _ in loaded]


def bundle_info(
    data: Prepared, members: tuple[Member, ...], provenance: dict, decision: dict | None = None
) -> BundleInfo:
    """What a graph of `members` needs to know of the data it reads: classes, image shape, pixel statistics, targets;
    `decision`: the ensemble's weights.json, whose cuts or thresholds decide the submitted labels."""
    decision = decision or {}
    thresholds = decision.get("thresholds")
    return BundleInfo(
        data.classes,
        int(data.train_images.shape[1]),
        data.channels,
        data.pixel_mean,
        data.pixel_std,
        members,
        provenance=provenance,
        targets=data.target_names,
        multi_label=data.multi_label,
        cuts=decision.get("cuts"),
        thresholds=None if thresholds is None else [thresholds[name] for name in data.classes],
    )


def needs_affine_grid(member: Member) -> bool:
    return any(resamples(view) for view in member.tta)


class EnsembleNet(torch.nn.Module):
    """Faces N×S×S×C (uint8, or float pixel values 0–255) → blended class probabilities N×classes,
    and, when the models have regression targets (info.targets), their blended values N×targets."""

    def __init__(self, info: BundleInfo, fold_models: Sequence[Sequence[torch.nn.Module]]):
        super().__init__()
        self.info = info
        self.groups = torch.nn.ModuleList(torch.nn.ModuleList(models) for models in fold_models)

    def forward(self, faces: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = faces.permute(0, 3, 1, 2).float()
        blended = None
        for member, models in zip(self.info.members, self.groups):
            outputs = member.weight * self._member_outputs(member, models, x)
            blended = outputs if blended is None else blended + outputs
        classes = len(self.info.classes)
        return (blended[:, :classes], blended[:, classes:]) if self.info.targets else blended

    def _member_outputs(self, member: Member, models: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, then target values, averaged over the member's views and fold models."""
        mean, std = member.pixel_mean or self.info.pixel_mean, member.pixel_std or self.info.pixel_std
        x = standardize(x, mean, std)
        if member.input_size and member.input_size != self.info.image_size:
            x = resize(x, member.input_size, member.interpolation)
        views = (member.plain_view,) if self.info.fast else member.tta
        # Views of one size go through a model as one batch; crop views are smaller than the rest.
        sizes = list(dict.fromkeys(view.get("crop") for view in views))
        batches = [torch.cat([apply_view(x, view) for view in views if view.get("crop") == size]) for size in sizes]
        total = None
        for model in models:
            for batch in batches:
                logits, values = split_outputs(model(batch).float(), len(self.info.classes))
                probs = torch.sigmoid(logits) if self.info.multi_label else torch.softmax(logits, dim=1)
                outputs = torch.cat([probs, values], dim=1) if self.info.targets else probs
                outputs = outputs.reshape(-1, x.shape[0], outputs.shape[-1]).sum(dim=0)
                total = outputs if total is None else total + outputs
        return total / (len(models) * len(views))


def bundle_opset(info: BundleInfo) -> int:
    """The bundle's opset: ONNX_OPSET, or the one its zoomed or sub-pixel shifted views need."""
    return RESAMPLING_OPSET if any(needs_affine_grid(m) for m in info.members) else ONNX_OPSET


def export_onnx(
    net: EnsembleNet, path: str | Path, opset: int, input_dtype: torch.dtype = torch.uint8, batch: int = 2
) -> None:
    """Write `net` as ONNX with a dynamic batch size and its BundleInfo in the metadata.

    The TorchScript exporter (dynamo=False) is used because it writes opsets below 18, which
    older runtimes such as TensorRT on Jetson-class devices parse.
    """
    info = net.info
    resampled = [m.name for m in info.members if needs_affine_grid(m)]
    if resampled and opset < RESAMPLING_OPSET:
        raise PipelineError(
            f"backbone(s) {resampled} have zoomed or sub-pixel shifted test-time views (tta), which ONNX writes only "
            f"from opset {RESAMPLING_OPSET} on (affine_grid, grid_sample); set export.opset: {RESAMPLING_OPSET}, "
            "or keep to flips and shifts by whole pixels in their tta"
        )
    example = torch.zeros(batch, info.image_size, info.image_size, info.channels, dtype=input_dtype)
    buffer = io.BytesIO()
    outputs = [PROBABILITIES, TARGETS] if info.targets else [PROBABILITIES]
    with torch.no_grad():
        torch.onnx.export(
            net.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["faces"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["faces", *outputs]},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
