"""Presets: partial params.yaml files written into params.yaml, comments kept, checked like the stages check."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.commands.preset import apply_preset
from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import PROJECT

PRESETS = sorted((PROJECT / "presets").glob("*.yaml"))


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(PROJECT / "params.yaml", path)
    return path


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_shipped_preset_gives_a_valid_config(preset, params):
    apply_preset(preset, params)
    config = load_config(params)
    wanted = yaml.safe_load(preset.read_text())
    assert list(config.backbones) == list(wanted.get("backbones", config.backbones))
    for key, value in wanted.get("train", {}).items():
        assert getattr(config.train, key) == (tuple(value) if isinstance(value, list) else value), key
    for name in config.backbones:
        views = wanted.get("tta", {}).get("backbones", {}).get(name, wanted.get("tta", {}).get("views"))
        assert views is None or config.tta.of(name) == tuple(views), name


def test_preset_merges_sections_replaces_backbones_and_keeps_comments(params, tmp_path):
    preset = tmp_path / "small.yaml"
    preset.write_text("train: {epochs: 3}\nbackbones: {convnext_atto: {lr: 0.001}}\n")
    apply_preset(preset, params)
    config = load_config(params)
    assert config.train.epochs == 3 and config.train.lr == load_config(PROJECT / "params.yaml").train.lr
    assert list(config.backbones) == ["convnext_atto"] and config.backbone("convnext_atto").lr == 0.001
    assert "# Every setting of the pipeline." in params.read_text()


@pytest.mark.parametrize(
    "text, complaint",
    [("trian: {epochs: 3}\n", "trian"), ("train: {epochs: three}\n", "epochs"), ("- just a list\n", "mapping")],
)
def test_a_bad_preset_is_refused_and_params_yaml_left_alone(params, tmp_path, text, complaint):
    before = params.read_text()
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError, match=complaint):
        apply_preset(preset, params)
    assert params.read_text() == before


def test_preset_command_names_the_known_presets_when_one_is_missing(params, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "preset", "presets/nope.yaml", "--params", str(params)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "fer2013-gpu.yaml" in done.stderr
