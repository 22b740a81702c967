"""FER-2013 end to end with a preset: per-stage wall time, training speed against the hardware, OOF accuracy.

    python benchmarks/fer2013.py --preset presets/fer2013-cpu.yaml          # what `make fer2013-cpu` runs
    python benchmarks/fer2013.py --preset presets/fer2013-gpu.yaml -S train.epochs=2 -S tune.enabled=false

Writes the preset into params.yaml (`python -m pipeline preset`), runs `dvc exp run` on
../shared/data/fer2013.zip (or --source) in this workspace, so the submissions are left in
submissions/, and prints: the wall time of every stage, each backbone's training images/s (median
over its epochs and folds) against the same model and optimizer on in-memory tensors, and the OOF
accuracy of every backbone, of the ensemble and of the blend of every subset of the backbones (a
time-budget curve from one run). The figures are also written to --out (.md, .json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from member_subsets import subset_rows, subsets_markdown  # noqa: E402
from throughput import in_memory_rate  # noqa: E402

from pipeline.commands.preset import apply_preset  # noqa: E402
from pipeline.config import Config, load_config, tuned_config  # noqa: E402
from pipeline.data import Prepared, load_prepared  # noqa: E402
from pipeline.files import read_json, write_json, write_text  # noqa: E402
from pipeline.training.models import pick_device  # noqa: E402

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def run_experiment(name: str, sets: list[str]) -> tuple[dict[str, float], float]:
    """`dvc exp run`, echoing its output; seconds per stage that ran, and in all."""
    command = [sys.executable, "-m", "dvc", "exp", "run", "-n", name, *[arg for s in sets for arg in ("-S", s)]]
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    current, since = None, started
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as dvc:
        for line in dvc.stdout:
            print(line, end="", flush=True)
            match = STAGE_LINE.search(line)
            if match:
                now = time.perf_counter()
                if current:
                    seconds[current] = now - since
                current, since = match.group(1), now
    total = time.perf_counter() - started
    if current:
        seconds[current] = time.perf_counter() - since
    if dvc.returncode != 0:
        sys.exit(f"dvc exp run failed (exit {dvc.returncode}); the figures above are incomplete")
    return seconds, total


def stage_group(stage: str) -> str:
    return stage.split("@")[0]


def training_speed(backbone: str, data: Prepared, config: Config, steps: int) -> tuple[float, float]:
    """(pipeline img/s from the run's history, in-memory img/s of the same model and optimizer)."""
    histories = [pd.read_csv(path) for path in sorted((ROOT / "models" / backbone).glob("fold*/history.csv"))]
    measured = float(pd.concat(histories)["train_images_per_s"].median())
    tuned = ROOT / "tuning" / f"{backbone}.json"
    trained = tuned_config(config.backbone(backbone), tuned if tuned.exists() else None)
    resolved = read_json(ROOT / "models" / backbone / f"fold{config.folds.ids[0]}" / "run.json")[
        "config"
    ]  # `auto` as measured
    trained = dataclasses.replace(trained, precision=resolved["precision"], channels_last=resolved["channels_last"])
    return measured, in_memory_rate(data, trained, pick_device(), steps=steps, warmup=5)


def training_time(backbone: str, config: Config) -> dict:
    """Minutes the backbone's fold runs took, their budget (None without one) and the epochs each trained."""
    runs = [read_json(ROOT / "models" / backbone / f"fold{fold}" / "run.json") for fold in config.folds.ids]
    budgets = [run.get("budget_seconds") for run in runs]
    return {
        "train_minutes": sum(run["seconds"] for run in runs) / 60,
        "budget_minutes": None if None in budgets else sum(budgets) / 60,
        "epochs": [run.get("planned_epochs") for run in runs],
        "precision": runs[0]["config"]["precision"],
        "channels_last": runs[0]["config"]["channels_last"],
    }


def expected_lines(expected: dict) -> list[str]:
    """The report's expected leaderboard: the submission's holdout score where there is a holdout, else OOF plus
    the fold-averaging gain estimated on the test images."""
    interval = f"(95% interval {expected['ci_low']:.4f}–{expected['ci_high']:.4f})"
    if expected.get("source") == "holdout":
        unlabelled = expected["unlabelled_estimate"]
        return [
            f"Expected leaderboard accuracy of the ensemble's submission: {expected['score']:.4f} {interval}, its "
            f"score on the {expected['holdout_images']} holdout images; from OOF and the test images it would have "
            f"been {unlabelled['accuracy']:.4f}."
        ]
    return [
        f"Expected leaderboard accuracy of the ensemble's submission: {expected['accuracy']:.4f} {interval}: OOF "
        f"{expected['oof_accuracy']:.4f} {expected['fold_averaging_gain']:+.4f} for averaging the fold models."
    ]


def holdout_lines(models: dict) -> list[str]:
    """Each member on the holdout, fold-averaged as submitted, and what averaging its fold models gained there."""
    members = {name: row["holdout"] for name, row in models.items() if name != "ensemble" and row.get("holdout")}
    if not members:
        return []
    judged = models["ensemble"]["holdout"]
    lines = ["", "| member | holdout, fold-averaged | one fold model | gain of averaging |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {row['score']:.4f} | {row['fold_model_score']:.4f} | {row['fold_averaging_gain']:+.4f} |"
        for name, row in members.items()
    ]
    blend = "–" if judged["blend"] is None else f"{judged['blend']:.4f}"
    lines += [f"| blend | {blend} | | |", "", f"Submitted: {judged['submitted']:.4f} on the holdout."]
    return lines


def summary_markdown(figures: dict) -> str:
    lines = [
        f"# FER-2013, preset {figures['preset']}",
        "",
        f"Device: {figures['device']}. Wall time of `dvc exp run`: {figures['wall_minutes']:.1f} min.",
        "",
        "| stage | minutes |",
        "|---|---|",
    ]
    lines += [f"| {stage} | {minutes:.1f} |" for stage, minutes in figures["stage_minutes"].items()]
    lines += [
        "",
        "| model | OOF acc | train img/s | in-memory img/s | ratio | train min | budget min | epochs per fold | "
        "precision, channels-last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in figures["models"].items():
        speed = (
            f"{row['train_img_s']:.0f} | {row['in_memory_img_s']:.0f} | "
            f"{row['train_img_s'] / row['in_memory_img_s']:.2f}"
            if "train_img_s" in row
            else "– | – | –"
        )
        time_cells = (
            f"{row['train_minutes']:.1f} | "
            + ("–" if row["budget_minutes"] is None else f"{row['budget_minutes']:.1f}")
            + f" | {', '.join(map(str, row['epochs']))} | {row['precision']}, {row['channels_last']}"
            if "train_minutes" in row
            else "– | – | – | –"
        )
        lines.append(f"| {name} | {row['oof_acc']:.4f} | {speed} | {time_cells} |")
    lines += ["", *expected_lines(figures["expected_leaderboard"]), *holdout_lines(figures["models"])]
    if len(figures["subsets"]) > 1:
        lines += [
            "",
            "Every subset of the members blended (cross-fitted OOF; benchmarks/member_subsets.py):",
            "",
            subsets_markdown(figures["subsets"]).rstrip(),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", type=Path, required=True)
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "fer2013.zip"))
    parser.add_argument(
        "-S", "--set", dest="sets", action="append", default=[], help="extra params override, as dvc exp run -S"
    )
    parser.add_argument("--speed-steps", type=int, default=30, help="steps of the in-memory speed reference")
    parser.add_argument("--out", type=Path, help="figures file stem (default benchmarks/results/<preset name>)")
    args = parser.parse_args()
    if not Path(args.source).exists() and not args.source.startswith("data/"):  # data/...: made by a stage
        sys.exit(f"{args.source} not found; pass --source path/to/fer2013.zip")
    apply_preset(args.preset, ROOT / "params.yaml")
    seconds, total = run_experiment(
        f"{args.preset.stem}-{time.strftime('%m%d-%H%M')}", [f"data.source={args.source}", *args.sets]
    )
    stage_minutes: dict[str, float] = {}
    for stage, value in seconds.items():
        stage_minutes[stage_group(stage)] = stage_minutes.get(stage_group(stage), 0.0) + value / 60
    models = {}
    config, data = load_config(ROOT / "params.yaml"), load_prepared(ROOT / "data" / "prepared")
    for name in config.members:
        measured, ideal = training_speed(name, data, config, args.speed_steps)
        scores = read_json(ROOT / "metrics" / f"{name}.json")
        models[name] = {
            "oof_acc": scores["accuracy"],
            "holdout": scores.get("holdout"),
            "train_img_s": measured,
            "in_memory_img_s": ideal,
            **training_time(name, config),
        }
    ensemble = read_json(ROOT / "metrics" / "ensemble.json")
    models["ensemble"] = {"oof_acc": ensemble["accuracy"], "holdout": ensemble.get("holdout")}
    figures = {
        "preset": args.preset.stem,
        "overrides": args.sets,
        "device": str(pick_device()),
        "wall_minutes": total / 60,
        "stage_minutes": stage_minutes,
        "models": models,
        "subsets": subset_rows(ROOT, config, data),
        "expected_leaderboard": read_json(ROOT / "metrics" / "report.json")["expected_leaderboard"],
    }
    out = args.out or ROOT / "benchmarks" / "results" / args.preset.stem
    write_json(figures, out.with_suffix(".json"))
    write_text(summary_markdown(figures), out.with_suffix(".md"))
    print(summary_markdown(figures))
    print(json.dumps({"submissions": sorted(str(p.relative_to(ROOT)) for p in (ROOT / "submissions").glob("*.csv"))}))


if __name__ == "__main__":
    main()
