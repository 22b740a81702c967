"""`python -m pipeline <stage>`: bad input ends with one clear line and a non-zero exit, no traceback."""

import pytest
import yaml

from tests.conftest import PROJECT, run_pipeline, tiny_params


def test_unknown_stage_prints_usage(tmp_path):
    done = run_pipeline("bogus", cwd=tmp_path)
    assert done.returncode == 2 and "usage: python -m pipeline" in done.stderr and "unknown name 'bogus'" in done.stderr


def test_help_lists_every_stage_and_command(tmp_path):
    done = run_pipeline("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(stages) | {"submit", "preset", "predict", "video", "distribute", "weights"}
    assert "Stage `train@<backbone>-<fold>`" in done.stdout  # each with the first line of its docstring


def test_missing_source_is_one_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    done = run_pipeline("prepare", "--source", "nowhere.zip", "--out", "prepared", cwd=tmp_path)
    assert done.returncode == 1
    assert "error: data.source 'nowhere.zip' does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "prepared").exists()


@pytest.mark.slow
def test_unknown_backbone_in_params_is_one_clear_error(tmp_path, prepared):
    params = tiny_params(backbones={"mystery": {"model": "resnet_nope"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "folds.csv").write_text("id,fold\n")
    stage = "train --backbone mystery --fold 0 --folds folds.csv --out m".split()
    done = run_pipeline(*stage, "--data", str(prepared), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "resnet_nope" in done.stderr
