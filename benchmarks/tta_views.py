"""OOF accuracy of a finished run's backbone under other test-time views, without training it again.

    python benchmarks/tta_views.py --backbone face_vgg --views views.yaml
    python benchmarks/tta_views.py --workspace /tmp/run --backbone face_vgg --views views.yaml --out benchmarks/results/tta-face-vgg

`--views` is a YAML mapping of names to lists of views, written as `train.tta` takes them, e.g.

    flip: [{}, {hflip: true}]
    flip and shifts: [{}, {hflip: true}, {shift: [3, 3]}, {shift: [3, 3], hflip: true}]

Each fold model scores its held-out fold under every set, at the precision and memory layout it
trained with. The set it trained with comes first (named `params.yaml`), so that row repeats
oof/<backbone>.csv. When the run has other backbones, each set's OOF is also blended with theirs as
the `ensemble` stage blends (weights fitted on the other folds), so a set is judged by what it adds to
the submission; its cost is the milliseconds per image the views take here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.augment import Normalizer  # noqa: E402
from pipeline.blend import cross_fitted_blend  # noqa: E402
from pipeline.config import Config, ConfigError, TrainConfig, load_config  # noqa: E402
from pipeline.data import Prepared, load_folds, load_prepared  # noqa: E402
from pipeline.engine import predict  # noqa: E402
from pipeline.files import read_json, write_json, write_text  # noqa: E402
from pipeline.models import load_weights, model_on, pick_device  # noqa: E402
from pipeline.predictions import fold_dir, read_oof_table  # noqa: E402

TRAINED_VIEWS = "params.yaml"
# What scoring depends on, taken from the fold run as it trained (auto precision and layout resolved).
SCORING_KEYS = ("model", "input_size", "precision", "channels_last", "eval_batch_size", "augment", "tta")


def read_view_sets(path: Path, config: TrainConfig) -> dict[str, tuple[dict, ...]]:
    """Named lists of views from a YAML mapping, each checked as `train.tta` is."""
    sets = yaml.safe_load(path.read_text())
    if not isinstance(sets, dict) or not sets:
        raise ConfigError(f"{path}: give a mapping of names to lists of views, e.g. `flip: [{{}}, {{hflip: true}}]`")
    for name, views in sets.items():
        if not isinstance(views, list):
            raise ConfigError(f"{path}: {name} must be a list of views, got {views!r}")
        dataclasses.replace(config, tta=tuple(views)).validate(f"{path}: {name}")
    return {str(name): tuple(views) for name, views in sets.items()}


def scoring_config(config: TrainConfig, run: dict) -> TrainConfig:
    trained = {key: run["config"][key] for key in SCORING_KEYS}
    trained["augment"], trained["tta"] = tuple(trained["augment"]), tuple(trained["tta"])
    return dataclasses.replace(config, **trained)


def oof_under_views(workspace: Path, backbone: str, config: Config, data: Prepared, fold_of: np.ndarray,
                    view_sets: dict[str, tuple[dict, ...]]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per set: OOF probabilities (every fold model on its held-out fold), and seconds per image."""
    device = pick_device()
    num_classes, outputs = len(data.classes), len(data.classes) + len(data.target_names)
    probs = {name: np.zeros((len(fold_of), num_classes)) for name in view_sets}
    seconds = dict.fromkeys(view_sets, 0.0)
    for fold in config.folds.ids:
        run_dir = fold_dir(workspace / "models", backbone, fold)
        train = scoring_config(config.backbone(backbone), read_json(run_dir / "run.json"))
        model = load_weights(model_on(train, data.channels, outputs, device), run_dir / "model.safetensors")
        normalize = Normalizer(data.pixel_mean, data.pixel_std, train.input_size, device, train.channels_last)
        held = np.flatnonzero(fold_of == fold)
        for name, views in view_sets.items():
            started = time.perf_counter()
            probs[name][held] = predict(model, data.train_images[held], normalize, train, views, num_classes)[0]
            seconds[name] += time.perf_counter() - started
    return probs, {name: total / len(fold_of) for name, total in seconds.items()}


def view_rows(workspace: Path, backbone: str, config: Config, data: Prepared, view_sets: dict[str, tuple[dict, ...]]) -> list[dict]:
    fold_of = load_folds(workspace / "folds" / "folds.csv", data.train_ids)
    trained = scoring_config(config.backbone(backbone), read_json(fold_dir(workspace / "models", backbone, config.folds.ids[0]) / "run.json"))
    sets = {TRAINED_VIEWS: trained.tta, **view_sets}
    probs, seconds = oof_under_views(workspace, backbone, config, data, fold_of, sets)
    others = [read_oof_table(workspace / "oof" / f"{name}.csv", data.classes, data.train_ids)[0] for name in config.backbones if name != backbone]
    labels = data.train_labels
    rows = []
    for name, views in sets.items():
        blended = cross_fitted_blend([probs[name], *others], labels, fold_of, config.ensemble.max_steps) if others else None
        rows.append({"views": name, "count": len(views), "oof_acc": float((probs[name].argmax(1) == labels).mean()),
                     "blend_oof_acc": None if blended is None else float((blended.argmax(1) == labels).mean()),
                     "ms_per_image": 1000 * seconds[name]})
    return rows


def rows_markdown(backbone: str, rows: list[dict]) -> str:
    lines = [f"| {backbone} views | count | OOF | blend OOF | ms per image |", "|---|---|---|---|---|"]
    lines += [f"| {row['views']} | {row['count']} | {row['oof_acc']:.4f} | "
              f"{'–' if row['blend_oof_acc'] is None else format(row['blend_oof_acc'], '.4f')} | {row['ms_per_image']:.2f} |"
              for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=ROOT, help="project folder holding params.yaml, folds/, oof/ and models/")
    parser.add_argument("--backbone", required=True, help="a key of `backbones` in the workspace's params.yaml")
    parser.add_argument("--views", type=Path, required=True, help="YAML mapping of names to lists of test-time views")
    parser.add_argument("--out", type=Path, help="also write the table to this stem (.md, .json)")
    args = parser.parse_args()
    config = load_config(args.workspace / "params.yaml")
    view_sets = read_view_sets(args.views, config.backbone(args.backbone))
    rows = view_rows(args.workspace, args.backbone, config, load_prepared(args.workspace / "data" / "prepared"), view_sets)
    table = rows_markdown(args.backbone, rows)
    print(table)
    if args.out:
        write_json({"backbone": args.backbone, "views": rows}, args.out.with_suffix(".json"))
        write_text(table, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
