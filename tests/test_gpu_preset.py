"""The gpu preset through the script that runs it on a GPU machine (benchmarks/fer2013_gpu.py), here on the
CPU with tiny budgets, so that neither rots between the rare runs on a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import PROJECT

TINY_BUDGETS = [
    "folds.ids=[0,1]",
    "train.time_budget_minutes=null",
    "train.epochs=1",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "export.int8=false",
    "export.latency_runs=2",
]


@pytest.fixture(scope="module")
def device_run(tmp_path_factory, competition):
    """The pack made here from a tiny competition, run in a copy of the project as the GPU machine runs it."""
    work = tmp_path_factory.mktemp("gpu-preset")
    project = work / "project"
    for name in ("pipeline", "benchmarks", "presets"):
        shutil.copytree(PROJECT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(PROJECT / name, project / name)
    script = [sys.executable, str(project / "benchmarks" / "fer2013_gpu.py")]
    sets = [arg for assignment in TINY_BUDGETS for arg in ("-S", assignment)]
    pack = work / "pack"
    packing = [*script, "pack", "--source", str(competition / "competition"), "--pack", str(pack), "--no-site", *sets]
    subprocess.run(packing, cwd=PROJECT, check=True, capture_output=True)
    out = work / "out"
    running = [*script, "run", "--pack", str(pack), "--out", str(out), "--parallel", "3"]
    done = subprocess.run(running, cwd=project, capture_output=True, text=True)
    return project, out, done


def test_every_stage_of_the_gpu_preset_runs_and_the_submission_comes_back(device_run):
    project, out, done = device_run
    results = json.loads((out / "results.json").read_text())
    assert done.returncode == 0, done.stderr[-3000:]
    assert results["failed"] == [] and results["not_run"] == [], results
    preset = yaml.safe_load((PROJECT / "presets" / "fer2013-gpu.yaml").read_text())
    folds, members = 2, list(preset["backbones"])  # TINY_BUDGETS's folds: the preset's own are 5
    assert {f"train@{m}-{k}" for m in members for k in range(folds)} <= set(results["stages"])
    assert len(results["runs"]) == folds * len(members)
    assert set(members) <= set(results["members"])
    submission = pd.read_csv(out / "ensemble.csv", dtype=str)
    assert len(submission) == len(pd.read_csv(project / "data/fer2013/sample_submission.csv"))
    assert (out / "logs.tar.gz").exists() and "| face_vgg_crop |" in (out / "results.md").read_text()


def test_fold_runs_share_the_machine_at_once(device_run):
    _, out, _ = device_run
    stages = json.loads((out / "results.json").read_text())["stages"]
    spans = sorted((s["start"], s["end"]) for name, s in stages.items() if name.startswith("train@"))
    assert any(later_start < end for (_, end), (later_start, _) in zip(spans, spans[1:]))
