"""OOF accuracy of a finished run's backbone under other test-time views, without training it again.

    python benchmarks/tta_views.py --backbone face_vgg --views views.yaml
    python benchmarks/tta_views.py --workspace /tmp/run --backbone face_vgg --views views.yaml --out
    benchmarks/results/tta-face-vgg

`--views` is a YAML mapping of names to lists of views, written as params.yaml's `tta` takes them, e.g.

    flip: [{}, {hflip: true}]
    flip and shifts: [{}, {hflip: true}, {shift: [3, 3]}, {shift: [3, 3], hflip: true}]

Each fold model scores its held-out fold under every set, at the precision and memory layout it
trained with. The views params.yaml gives the backbone (those `oof@` used) come first, named
`params.yaml`, so that row repeats oof/<backbone>.csv. When the run has other backbones, each
set's OOF is also blended with theirs as the `ensemble` stage blends (weights fitted on the other
folds), so a set is judged by what it adds to the submission; its cost is the milliseconds per image
the views take here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Config, check_views, load_config  # noqa: E402
from pipeline.data import Prepared, load_folds, load_prepared  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.evaluation.blend import cross_fitted_blend  # noqa: E402
from pipeline.evaluation.predictions import fold_dir, read_oof_table  # noqa: E402
from pipeline.files import write_json, write_text  # noqa: E402
from pipeline.training.augment import Normalizer  # noqa: E402
from pipeline.training.models import load_trained, pick_device  # noqa: E402
from pipeline.training.predict import predict  # noqa: E402

PARAMS_VIEWS = "params.yaml"


def read_view_sets(path: Path) -> dict[str, tuple[dict, ...]]:
    """Named lists of views from a YAML mapping, each checked as params.yaml's `tta` is."""
    sets = yaml.safe_load(path.read_text())
    if not isinstance(sets, dict) or not sets:
        raise ConfigError(f"{path}: give a mapping of names to lists of views, e.g. `flip: [{{}}, {{hflip: true}}]`")
    for name, views in sets.items():
        check_views(views, f"{path}: {name}.tta")
    return {str(name): tuple(views) for name, views in sets.items()}


def oof_under_views(
    workspace: Path,
    backbone: str,
    config: Config,
    data: Prepared,
    fold_of: np.ndarray,
    view_sets: dict[str, tuple[dict, ...]],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per set: OOF probabilities (every fold model on its held-out fold), and seconds per image."""
    device = pick_device()
    num_classes, outputs = len(data.classes), len(data.classes) + len(data.target_names)
    probs = {name: np.zeros((len(fold_of), num_classes)) for name in view_sets}
    seconds = dict.fromkeys(view_sets, 0.0)
    for fold in config.folds.ids:
        weights = fold_dir(workspace / "models", backbone, fold) / "model.safetensors"
        model, train = load_trained(weights, data.channels, outputs, device)
        normalize = Normalizer.of_model(train, data, device)
        held = np.flatnonzero(fold_of == fold)
        for name, views in view_sets.items():
            started = time.perf_counter()
            probs[name][held] = predict(model, data.train_images[held], normalize, train, views, num_classes)[0]
            seconds[name] += time.perf_counter() - started
    return probs, {name: total / len(fold_of) for name, total in seconds.items()}


def view_rows(
    workspace: Path, backbone: str, config: Config, data: Prepared, view_sets: dict[str, tuple[dict, ...]]
) -> list[dict]:
    fold_of = load_folds(workspace / "folds" / "folds.csv", data.train_ids)
    sets = {PARAMS_VIEWS: config.tta.of(backbone), **view_sets}
    probs, seconds = oof_under_views(workspace, backbone, config, data, fold_of, sets)
    others = [
        read_oof_table(workspace / "oof" / f"{name}.csv", data.classes, data.train_ids, data.multi_label)[0]
        for name in config.members
        if name != backbone
    ]
    labels = data.train_labels
    rows = []
    for name, views in sets.items():
        blended = (
            cross_fitted_blend([probs[name], *others], labels, fold_of, config.ensemble.max_steps) if others else None
        )
        rows.append(
            {
                "views": name,
                "count": len(views),
                "oof_acc": float((probs[name].argmax(1) == labels).mean()),
                "blend_oof_acc": None if blended is None else float((blended.argmax(1) == labels).mean()),
                "ms_per_image": 1000 * seconds[name],
            }
        )
    return rows


def rows_markdown(backbone: str, rows: list[dict]) -> str:
    lines = [f"| {backbone} views | count | OOF | blend OOF | ms per image |", "|---|---|---|---|---|"]
    lines += [
        f"| {row['views']} | {row['count']} | {row['oof_acc']:.4f} | "
        f"{'–' if row['blend_oof_acc'] is None else format(row['blend_oof_acc'], '.4f')} | {row['ms_per_image']:.2f} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workspace", type=Path, default=ROOT, help="project folder holding params.yaml, folds/, oof/ and models/"
    )
    parser.add_argument("--backbone", required=True, help="a key of `backbones` in the workspace's params.yaml")
    parser.add_argument("--views", type=Path, required=True, help="YAML mapping of names to lists of test-time views")
    parser.add_argument("--out", type=Path, help="also write the table to this stem (.md, .json)")
    args = parser.parse_args()
    config = load_config(args.workspace / "params.yaml")
    view_sets = read_view_sets(args.views)
    rows = view_rows(
        args.workspace, args.backbone, config, load_prepared(args.workspace / "data" / "prepared"), view_sets
    )
    table = rows_markdown(args.backbone, rows)
    print(table)
    if args.out:
        write_json({"backbone": args.backbone, "views": rows}, args.out.with_suffix(".json"))
        write_text(table, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
