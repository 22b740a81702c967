"""The bundle's ensemble as one torch module, and its export to ONNX.

The module repeats, in one forward pass, what the pipeline does to reach the submission: normalise
as training did, resize to each member's input size, average every fold model over its test-time
views, weight the members as the blend did. Its probabilities therefore equal ensemble/test.csv,
which the `bundle` stage checks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import onnx
import torch
import torch.nn.functional as F

from pipeline.augment import apply_view
from pipeline.bundle import METADATA_KEY, BundleInfo, Member
from pipeline.files import atomic_path

# 17: the TorchScript exporter's newest well-trodden opset, with grid_sample (shift/zoom views) and
# everything onnxruntime's CPU provider runs; exports for older runtimes are the export stage's job.
ONNX_OPSET = 17


class EnsembleNet(torch.nn.Module):
    """uint8 faces N×S×S×C → blended class probabilities N×classes."""

    def __init__(self, info: BundleInfo, fold_models: Sequence[Sequence[torch.nn.Module]]):
        super().__init__()
        self.info = info
        self.groups = torch.nn.ModuleList(torch.nn.ModuleList(models) for models in fold_models)
        self.mean, self.std = info.pixel_mean * 255, info.pixel_std * 255

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = (faces.permute(0, 3, 1, 2).float() - self.mean) / self.std
        blended = None
        for member, models in zip(self.info.members, self.groups):
            probs = member.weight * self._member_probabilities(member, models, x)
            blended = probs if blended is None else blended + probs
        return blended

    def _member_probabilities(self, member: Member, models: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        if member.input_size and member.input_size != self.info.image_size:
            x = F.interpolate(x, size=(member.input_size, member.input_size), mode="bilinear", align_corners=False)
        views = ({},) if self.info.fast else member.tta
        batch = torch.cat([apply_view(x, view) for view in views]) if len(views) > 1 else apply_view(x, views[0])
        total = None
        for model in models:
            probs = torch.softmax(model(batch).float(), dim=1)
            probs = probs.reshape(len(views), -1, probs.shape[-1]).mean(dim=0)
            total = probs if total is None else total + probs
        return total / len(models)


def export_onnx(net: EnsembleNet, path: str, batch: int = 2) -> None:
    """Write `net` as ONNX with a dynamic batch size and its BundleInfo in the metadata."""
    info = net.info
    example = torch.zeros(batch, info.image_size, info.image_size, info.channels, dtype=torch.uint8)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net.eval(), (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["faces"], output_names=["probabilities"],
                          dynamic_axes={"faces": {0: "batch"}, "probabilities": {0: "batch"}})
    graph = onnx.load_from_string(buffer.getvalue())
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
