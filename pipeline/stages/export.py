"""Stage `export`: every fold model, and the ensemble as one graph, as ONNX for other runtimes, fp32 and int8.

Writes export/<backbone>/fold<k>.onnx for every backbone and fold, export/ensemble.onnx (the
blend's fold models, test-time views and weights in one graph, as bundle/ensemble.onnx) and, with
export.int8, an .int8.onnx beside each. The graphs read float pixel values 0–255, N×S×S×C with a
dynamic batch N, at opset export.opset, and carry the bundle metadata, so `predict` and `video`
run them with --model. Each fp32 graph is checked against PyTorch on train images. A fold's int8
graph is calibrated on train images outside its held-out fold, so its OOF accuracy stays honest.

The deployment table (size, CPU latency per face at batch 1, OOF accuracy; per backbone and for
the ensemble, fp32 and int8; with valence/arousal targets, their OOF CCC too) goes to
metrics/export.json and export/deployment.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.config import ExportConfig, load_config
from pipeline.data import Prepared, load_folds, load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.affect import ccc
from pipeline.evaluation.blend import blend
from pipeline.evaluation.metrics import hits
from pipeline.files import atomic_dir, read_json, write_json
from pipeline.graphs.ensemble_net import EnsembleNet, bundle_info, export_onnx, load_member
from pipeline.graphs.quantize import quantize_int8
from pipeline.runtime.classifier import Classifier, latency_ms
from pipeline.runtime.deployment import DeploymentRow, markdown, size_mb

CHECK_IMAGES = 64  # train images each fp32 graph is compared with PyTorch on
ENSEMBLE = "ensemble"


def faces_of(data: Prepared, rows: np.ndarray) -> np.ndarray:
    """Train images as the graphs read them: N×S×S×C."""
    size = data.train_images.shape[1]
    return np.asarray(data.train_images[rows]).reshape(len(rows), size, size, data.channels)


def torch_outputs(net: EnsembleNet, faces: np.ndarray) -> np.ndarray:
    """What Classifier.outputs gives for the exported `net`, computed by PyTorch."""
    with torch.no_grad():
        outputs = net(torch.from_numpy(faces.astype(np.float32)))
    return torch.cat(outputs, dim=1).numpy() if isinstance(outputs, tuple) else outputs.numpy()


def write_graph(net: EnsembleNet, path: Path, check_faces: np.ndarray, settings: ExportConfig) -> float:
    """Export `net` and return the largest |PyTorch − onnxruntime| output on `check_faces`, refusing above the bound."""
    export_onnx(net, path, opset=settings.opset, input_dtype=torch.float32)
    difference = float(np.abs(Classifier(path).outputs(check_faces) - torch_outputs(net, check_faces)).max())
    if difference > settings.max_difference:
        raise PipelineError(
            f"{path}: onnxruntime's outputs differ from PyTorch's by {difference:.2e} on train images "
            f"(export.max_difference {settings.max_difference:.0e}); try another export.opset, or raise the bound if "
            "it is rounding"
        )
    return difference


def calibration_rows(outside: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(outside, size=min(count, len(outside)), replace=False))


class Exporter:
    """Writes the graphs into `out` and keeps what the deployment table needs."""

    def __init__(self, data: Prepared, fold_of: np.ndarray, settings: ExportConfig, out: Path):
        self.data, self.fold_of, self.settings, self.out = data, fold_of, settings, out
        self.precisions = ("fp32", "int8") if settings.int8 else ("fp32",)
        self.differences: dict[str, float] = {}

    def graph_files(self, stem: Path) -> dict[str, Path]:
        return {
            precision: stem.with_name(stem.name + (".onnx" if precision == "fp32" else f".{precision}.onnx"))
            for precision in self.precisions
        }

    def write(self, net: EnsembleNet, stem: Path, check_rows: np.ndarray, calibration: np.ndarray) -> dict[str, Path]:
        files = self.graph_files(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.differences[str(files["fp32"].relative_to(self.out))] = write_graph(
            net, files["fp32"], faces_of(self.data, check_rows), self.settings
        )
        if "int8" in files:
            quantize_int8(files["fp32"], files["int8"], faces_of(self.data, calibration))
        return files

    def backbone(
        self, models_dir: Path, name: str, folds: tuple[int, ...], views: tuple[dict, ...]
    ) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
        """One graph per fold; the first fold's files (for size and latency) and OOF outputs per precision."""
        columns = len(self.data.classes) + len(self.data.target_names)
        oof = {precision: np.full((len(self.fold_of), columns), np.nan, np.float32) for precision in self.precisions}
        first: dict[str, Path] = {}
        for fold in folds:
            member, models = load_member(models_dir, name, 1.0, (fold,), self.data, views)
            held = np.flatnonzero(self.fold_of == fold)
            outside = np.flatnonzero(self.fold_of != fold)
            net = EnsembleNet(bundle_info(self.data, (member,), {"fold": fold}), [models])
            files = self.write(
                net,
                self.out / name / f"fold{fold}",
                held[:CHECK_IMAGES],
                calibration_rows(outside, self.settings.calibration_images, self.settings.seed),
            )
            for precision, path in files.items():
                oof[precision][held] = Classifier(path).outputs(self.data.train_images[held])
            first = first or files
        return first, oof


def oof_scores(outputs: np.ndarray, data: Prepared) -> tuple[float, dict[str, float]]:
    """Accuracy and each target's CCC of OOF outputs, on the rows they cover."""
    scored = ~np.isnan(outputs).any(axis=1)
    classes = len(data.classes)
    accuracy = float(hits(outputs[scored, :classes], data.train_labels[scored]).mean())
    concordance = {
        name: round(ccc(outputs[scored, classes + i], data.train_targets[scored, i]), 4)
        for i, name in enumerate(data.target_names)
    }
    return accuracy, concordance


def deployment_rows(
    files: dict[str, dict[str, Path]],
    oof: dict[str, dict[str, np.ndarray]],
    data: Prepared,
    face: np.ndarray,
    settings: ExportConfig,
    out: Path,
) -> list[DeploymentRow]:
    """Timed one after another, after every graph is written, so no timing shares the cores with other work."""
    rows = []
    for model, by_precision in files.items():
        for precision, path in by_precision.items():
            latency = {
                str(threads): latency_ms(path, face, threads, settings.latency_runs)
                for threads in settings.latency_threads
            }
            rows.append(
                DeploymentRow(
                    model,
                    precision,
                    str(path.relative_to(out)),
                    size_mb(path),
                    latency,
                    *oof_scores(oof[model][precision], data),
                )
            )
    return rows


def deployment_caption(settings: ExportConfig, data: Prepared) -> str:
    side = data.train_images.shape[1]
    return (
        f"ONNX opset {settings.opset}, input N×{side}×{side}×{data.channels} float pixel values 0–255. A backbone's "
        "row is one fold "
        "model; the ensemble's row is every fold model of the blend in one graph. Latency: onnxruntime CPU, one face "
        "at batch 1, "
        f"median of {settings.latency_runs} runs. OOF: each fold's graph on its held-out fold; the ensemble blends "
        "those."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True, help="folds/folds.csv")
    parser.add_argument("--models", type=Path, required=True, help="folder of train outputs (models/)")
    parser.add_argument("--ensemble", type=Path, required=True, help="folder with the blend's weights.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--metrics", type=Path, required=True, help="the deployment table as JSON (metrics/export.json)"
    )
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    settings, folds = config.export, config.folds.ids
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    weights = {
        name: weight for name, weight in read_json(args.ensemble / "weights.json")["weights"].items() if weight > 0
    }
    with atomic_dir(args.out) as tmp:
        exporter = Exporter(data, fold_of, settings, tmp)
        files, oof = {}, {}
        for name in config.members:
            files[name], oof[name] = exporter.backbone(args.models, name, folds, config.tta.of(name))
            print(f"export: {name} × {len(folds)} folds → {args.out}/{name}/ ({', '.join(exporter.precisions)})")
        kept = [
            load_member(args.models, name, weight, folds, data, config.tta.of(name)) for name, weight in weights.items()
        ]
        net = EnsembleNet(
            bundle_info(data, tuple(member for member, _ in kept), {"weights": weights}), [models for _, models in kept]
        )
        scored = np.flatnonzero(np.isin(fold_of, folds))
        files[ENSEMBLE] = exporter.write(
            net,
            tmp / ENSEMBLE,
            scored[:CHECK_IMAGES],
            calibration_rows(scored, settings.calibration_images, settings.seed),
        )
        oof[ENSEMBLE] = {
            precision: blend([oof[name][precision] for name in weights], np.array(list(weights.values())))
            for precision in exporter.precisions
        }
        rows = deployment_rows(files, oof, data, faces_of(data, scored[:1])[0], settings, tmp)
        caption = deployment_caption(settings, data)
        (tmp / "deployment.md").write_text(markdown(rows, caption))
    write_json(
        {
            "opset": settings.opset,
            "caption": caption,
            "rows": [row.as_dict() for row in rows],
            "max_difference": exporter.differences,
        },
        args.metrics,
    )
    print(markdown(rows, caption))
    print(
        f"export: largest PyTorch vs onnxruntime output difference {max(exporter.differences.values()):.1e} (bound "
        f"{settings.max_difference:.0e})"
    )
