import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from safetensors import safe_open

from pipeline.data import load_prepared
from pipeline.evaluation.metrics import ACCURACY
from pipeline.files import read_json
from pipeline.stages.report import inference_ms_per_image
from pipeline.training import budget, speed
from pipeline.training.fold_outputs import write_fold_outputs
from pipeline.training.fold_run import fit_fold, fold_checkpoint
from tests.conftest import train_config

CPU = torch.device("cpu")
AUTO = train_config(
    model="resnet10t", batch_size=8, warmup_epochs=0, workers=0, augment=(), precision="auto", channels_last="auto"
)
SHAPE = {"in_chans": 1, "num_outputs": 3, "image_size": 16, "device": CPU}
SPEEDS = {("fp32", False): 100, ("fp32", True): 150, ("bf16", False): 50, ("bf16", True): 60}  # img/s


def fake_measure(monkeypatch, speeds: dict, unstable: tuple = ()) -> list:
    """Replace the timing with `speeds` {(precision, channels_last): img/s}; returns the settings measured."""
    measured = []

    def measure(config, in_chans, num_outputs, image_size, device):
        setting = (config.precision, config.channels_last)
        measured.append(setting)
        return speed.Probe(speeds[setting], setting not in unstable)

    monkeypatch.setattr(speed, "measure", measure)
    return measured


@pytest.mark.slow
def test_auto_is_measured_on_real_training_steps_then_read_from_the_cache(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "speed.json"
    with caplog.at_level(logging.INFO, logger="pipeline.training.speed"):
        first = speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=cache)
    assert dataclasses.replace(first, precision="auto", channels_last="auto") == AUTO  # nothing else changed
    assert "resnet10t: precision" in caplog.text and "fp32/cl" in caplog.text and f"cached in {cache}" in caplog.text
    (entry,) = read_json(cache)["entries"].values()
    assert (entry["precision"], entry["channels_last"]) == (first.precision, first.channels_last)
    rates = {name: rate for name, rate in entry["measured"].items() if rate is not None}
    fastest = max(rates, key=lambda name: rates[name] / (1 + speed.BF16_MARGIN if name.startswith("bf16") else 1))
    assert first.precision + ("/cl" if first.channels_last else "") == fastest  # the fastest measured, bf16 by a margin

    measured = fake_measure(monkeypatch, SPEEDS)
    assert speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=cache) == first
    assert measured == []
    monkeypatch.setattr(speed, "cpu_description", lambda: "another CPU; avx2")  # another machine measures again
    speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=cache)
    assert len(measured) == 4 and len(read_json(cache)["entries"]) == 2


def test_a_model_trained_on_crops_is_measured_for_itself_not_read_from_its_whole_image_twin(tmp_path, monkeypatch):
    measured = fake_measure(monkeypatch, SPEEDS)
    cache = tmp_path / "speed.json"
    speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=cache)
    cropped = dataclasses.replace(AUTO, augment=({"RandomCrop": {"height": 12, "width": 12}},))
    speed.resolve_speed_settings(cropped, **SHAPE, cache_path=cache)
    assert len(measured) == 8 and len(read_json(cache)["entries"]) == 2


def test_only_the_auto_field_varies(tmp_path, monkeypatch):
    measured = fake_measure(monkeypatch, SPEEDS)
    chosen = speed.resolve_speed_settings(
        dataclasses.replace(AUTO, precision="fp32"), **SHAPE, cache_path=tmp_path / "s.json"
    )
    assert measured == [("fp32", False), ("fp32", True)] and (chosen.precision, chosen.channels_last) == ("fp32", True)
    fixed = dataclasses.replace(AUTO, precision="fp32", channels_last=False)
    assert speed.resolve_speed_settings(fixed, **SHAPE, cache_path=tmp_path / "none.json") is fixed
    assert len(measured) == 2 and not (tmp_path / "none.json").exists()


def test_a_gpu_with_native_bf16_takes_it_unmeasured(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: not including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    measured = fake_measure(monkeypatch, SPEEDS)
    gpu = {**SHAPE, "device": torch.device("cuda")}
    assert (
        speed.resolve_speed_settings(
            dataclasses.replace(AUTO, channels_last=False), **gpu, cache_path=tmp_path / "s.json"
        ).precision
        == "bf16"
    )
    assert measured == [] and not (tmp_path / "s.json").exists()
    assert speed.resolve_speed_settings(AUTO, **gpu, cache_path=tmp_path / "s.json").precision == "bf16"
    assert measured == [("bf16", False), ("bf16", True)]  # channels-last is still measured


@pytest.mark.parametrize("bf16_speed, expected", [(104, "fp32"), (110, "bf16")])
def test_bf16_must_be_clearly_faster_than_fp32(tmp_path, monkeypatch, bf16_speed, expected):
    fake_measure(
        monkeypatch, {("fp32", False): 100, ("fp32", True): 90, ("bf16", False): bf16_speed, ("bf16", True): 80}
    )
    chosen = speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=tmp_path / "s.json")
    assert (chosen.precision, chosen.channels_last) == (expected, False)


def test_a_setting_whose_losses_are_not_finite_is_never_picked(tmp_path, monkeypatch, caplog):
    speeds = {("fp32", False): 100, ("fp32", True): 120, ("bf16", False): 300, ("bf16", True): 400}
    fake_measure(monkeypatch, speeds, unstable=(("bf16", False), ("bf16", True)))
    chosen = speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=tmp_path / "s.json")
    assert (chosen.precision, chosen.channels_last) == ("fp32", True)

    fake_measure(monkeypatch, speeds, unstable=tuple(speeds))
    with caplog.at_level(logging.WARNING, logger="pipeline.training.speed"):
        chosen = speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=tmp_path / "unstable.json")
    assert (chosen.precision, chosen.channels_last) == ("fp32", False)  # the first candidate: the safe setting
    assert "no setting trained with finite losses" in caplog.text and not (tmp_path / "unstable.json").exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps([1, 2]), json.dumps({"format": 99, "entries": {}})])
def test_a_corrupt_or_foreign_cache_is_ignored_with_a_warning_and_replaced(tmp_path, monkeypatch, caplog, content):
    cache = tmp_path / "speed.json"
    cache.write_text(content)
    measured = fake_measure(monkeypatch, SPEEDS)
    with caplog.at_level(logging.WARNING, logger="pipeline.training.speed"):
        chosen = speed.resolve_speed_settings(AUTO, **SHAPE, cache_path=cache)
    assert (chosen.precision, chosen.channels_last) == ("fp32", True) and len(measured) == 4
    assert str(cache) in caplog.text and "measuring again" in caplog.text
    assert read_json(cache)["format"] == speed.CACHE_FORMAT


@pytest.mark.slow
def test_train_run_with_auto_trains_plans_and_saves_the_resolved_settings(prepared, tmp_path, monkeypatch):
    """The run's own path through `auto`, with the probe's timings given (the test above measures for real)."""
    fake_measure(monkeypatch, SPEEDS)
    data = load_prepared(prepared)
    fold_of = np.arange(len(data.train_ids)) % 3
    config = train_config(
        model="resnet10t",
        epochs=1,
        batch_size=16,
        workers=0,
        augment=(),
        eval_batch_size=64,
        precision="auto",
        channels_last="auto",
        time_budget_minutes=1e6,
    )
    planned = []
    monkeypatch.setattr(
        budget, "plan_epochs", lambda *args, **kwargs: planned.append(args[3]) or budget.EpochPlan(1, 1.0, 1.0, 1e6)
    )
    checkpoint = fold_checkpoint(tmp_path / "checkpoints", "resnet10t", data, fold_of, 0, config)
    run = fit_fold(data, fold_of, 0, config, checkpoint=checkpoint)
    resolved = (run.config.precision, run.config.channels_last)
    (entry,) = read_json(tmp_path / "checkpoints" / speed.CACHE_NAME)["entries"].values()
    assert resolved == (entry["precision"], entry["channels_last"]) == ("fp32", True)  # the fastest of SPEEDS
    assert [(c.precision, c.channels_last) for c in planned] == [resolved]  # the budget timed what trains
    assert (tmp_path / "checkpoints" / speed.CACHE_NAME).is_file()  # beside the run's checkpoint

    write_fold_outputs(run, data, 0, "resnet10t", ACCURACY, tmp_path / "out")
    saved = read_json(tmp_path / "out" / "run.json")["config"]
    assert (saved["precision"], saved["channels_last"]) == resolved
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as weights:
        assert json.loads(weights.metadata()["config"])["precision"] == resolved[0]
    inference_ms_per_image(tmp_path / "out" / "model.safetensors", ({},), data)  # the report's reading
