"""The photos preset on the synthetic photo competition: face crops against whole photos, each end to end.

    python benchmarks/photos.py                                   # both arms, from scratch (no hub here)
    python benchmarks/photos.py --set train.pretrained=true       # ImageNet weights from the Hugging Face cache

Each arm is a fresh project in --work/<arm>: the pipeline, dvc.yaml, and params.yaml with presets/photos.yaml
and the arm's settings written in; `dvc repro` runs it whole, from `synthesize` to the ONNX export. The table
gives each arm's minutes end to end, its ensemble OOF accuracy with the 95% interval, the expected leaderboard
accuracy, the accuracy of its submission against the synthetic competition's hidden answers, the images in
which no face was found, and the exported fold model's ms a face. A finished arm is read back, not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.commands.preset import apply_preset  # noqa: E402
from pipeline.files import read_json, write_json, write_text  # noqa: E402

ARMS = {"crops": {"data.face_crop": True}, "whole": {"data.face_crop": False}}


def dotted(pairs: list[str]) -> dict:
    """`key.sub=value` pairs → {key.sub: value}, values read as YAML."""
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def make_project(folder: Path, settings: dict) -> None:
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "pipeline", folder / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, folder / name)
    apply_preset(ROOT / "presets/photos.yaml", folder / "params.yaml")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for key, value in settings.items():
        section, *path, last = key.split(".")
        target = params[section]
        for part in path:
            target = target[part]
        target[last] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=folder, check=True, capture_output=True)


def run_arm(folder: Path, settings: dict) -> dict:
    done_file = folder / "arm.json"
    if done_file.exists():
        return read_json(done_file)
    if folder.exists():
        shutil.rmtree(folder)
    make_project(folder, settings)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    started = time.perf_counter()
    with open(folder / "repro.log", "w") as log:
        subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=folder, env=env, stdout=log, stderr=log, check=True)
    minutes = (time.perf_counter() - started) / 60
    report, export = read_json(folder / "metrics/report.json"), read_json(folder / "metrics/export.json")
    answers = pd.read_csv(folder / "data/synthetic/answers.csv", dtype=str)
    submitted = pd.read_csv(folder / "submissions/ensemble.csv", dtype=str)
    test = answers.merge(submitted, on="id", suffixes=("", "_submitted"))
    fold_model = next(row for row in export["rows"] if row["precision"] == "fp32")
    row = {
        "settings": settings,
        "minutes": round(minutes, 1),
        "oof": report["ensemble"]["accuracy"],
        "oof_ci": [report["ensemble"]["ci_low"], report["ensemble"]["ci_high"]],
        "expected": report["expected_leaderboard"].get("accuracy", report["expected_leaderboard"].get("score")),
        "test": float((test["label"] == test["label_submitted"]).mean()),
        "no_face": report.get("no_face"),
        "ms_per_face": min(fold_model["latency_ms"].values()),
        "train_minutes": report["ensemble"]["train_minutes"],
    }
    write_json(row, done_file)
    return row


def markdown(rows: dict[str, dict]) -> str:
    lines = [
        "| arm | minutes end to end | OOF accuracy (95% CI) | expected | hidden test | no face (train/test) "
        "| ms a face |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in rows.items():
        no_face = f"{r['no_face']['train']}/{r['no_face']['test']}" if r["no_face"] else "–"
        lines.append(
            f"| {arm} | {r['minutes']:.1f} | {r['oof']:.4f} ({r['oof_ci'][0]:.4f}–{r['oof_ci'][1]:.4f}) | "
            f"{r['expected']:.4f} | {r['test']:.4f} | {no_face} | {r['ms_per_face']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--set", action="append", default=[], help="key.sub=value for every arm, e.g. train.epochs=5")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/photos_work", help="not for git")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/photos")
    args = parser.parse_args(argv)
    common = {"train.pretrained": False, **dotted(args.set)}
    rows = {}
    for arm in args.arms:
        rows[arm] = run_arm(args.work / arm, {**common, **ARMS[arm]})
        print(json.dumps({arm: rows[arm]}), flush=True)
    write_json(rows, args.out.with_suffix(".json"))
    write_text(markdown(rows) + "\n", args.out.with_suffix(".md"))
    print(markdown(rows))


if __name__ == "__main__":
    main()
