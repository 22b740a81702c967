import re
import shutil

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from pipeline.config import config_from_dict, load_config
from pipeline.errors import ConfigError
from tests.conftest import PROJECT, project_params


def test_project_params_load_and_resolve_every_backbone():
    config = load_config(PROJECT / "params.yaml")
    assert len(config.backbones) >= 2
    for name in config.backbones:
        resolved = config.backbone(name)
        assert resolved.model  # timm name defaults to the run name
        assert resolved.epochs >= 1


def test_backbone_overrides_win_over_defaults_and_model_defaults_to_key():
    params = project_params()
    params["backbones"] = {"small": {"model": "resnet10t", "epochs": 3}, "resnet18": {}}
    config = config_from_dict(params)
    assert config.backbone("small").model == "resnet10t"
    assert config.backbone("small").epochs == 3
    assert config.backbone("resnet18").model == "resnet18"
    assert config.backbone("resnet18").epochs == params["train"]["epochs"]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda p: p["train"].update(epohcs=3), "epohcs"),
        (lambda p: p.update(trian={}), "trian"),
        (lambda p: p["backbones"].update(bad={"lr": -1.0}), "backbones.bad.lr"),
        (lambda p: p["train"].update(precision="fp8"), "precision"),
        (
            lambda p: p["train"].update(precision="fast"),
            r"train.precision='fast' is out of range: it must be one of \['fp32', 'bf16', 'fp16', 'auto'\]",
        ),
        (
            lambda p: p["train"].update(channels_last="maybe"),
            r"train.channels_last='maybe' is out of range: it must be true, false or auto",
        ),
        (
            lambda p: p["backbones"].update(bad={"channels_last": 1}),
            r"backbones.bad.channels_last must be true or false or text, got 1",
        ),
        (lambda p: p["folds"].update(ids=[0, 2]), "folds.ids"),
        (lambda p: p["train"].update(epochs="ten"), "train.epochs"),
        (
            lambda p: p.update(backbone=p.pop("backbones")),
            r"unknown section\(s\) \['backbone'\] \(did you mean 'backbone' → 'backbones'\?\)",
        ),
        (lambda p: p["train"].update(lr="abc"), r"train.lr must be a number, got 'abc'"),
        (lambda p: p["train"].update(drop_rate="abc"), r"train.drop_rate must be a number, got 'abc'"),
        (lambda p: p["train"].update(drop_rate=1.5), r"train.drop_rate=1.5 is out of range"),
        (lambda p: p["data"].update(image_size=0), r"data.image_size=0 is out of range: it must be between 8 and 1024"),
        (lambda p: p["data"].update(channels=2), r"data.channels=2"),
        (lambda p: p["data"].update(face_crop="yes"), r"data.face_crop must be true or false, got 'yes'"),
        (lambda p: p["synthetic"].update(photos=1), r"synthetic.photos must be true or false, got 1"),
        (lambda p: p["ensemble"].update(max_steps=0), r"ensemble.max_steps=0 is out of range"),
        (lambda p: p["backbones"].update({"my net": {"model": "resnet18"}}), r"run name 'my net' may hold only"),
        (lambda p: p["backbones"].update(bad=[1, 2]), r"backbones.bad must be a mapping"),
        (lambda p: p["train"].pop("lr"), r"train: key\(s\) \['lr'\] missing"),
        (lambda p: p.pop("ensemble"), r"section\(s\) \['ensemble'\] missing"),
        (lambda p: p["tta"].update(views=[{}, {"hflip": "yes"}]), r"tta.views: view .*hflip must be true or false"),
        (lambda p: p["tta"].update(views=[{"rotate": 10}]), r"tta.views: view .* unknown key\(s\) \['rotate'\]"),
        (lambda p: p["tta"].update(views=[]), r"tta.views=\[\] must be a list of at least one view"),
        (
            lambda p: p["tta"].update(backbones={"nosuch": [{}]}),
            r"tta.backbones names \['nosuch'\], which `backbones` and `distill.students` do not have",
        ),
        (lambda p: p["train"].update(augment=[{"HorizontalFlip": {"p": 0.5}, "Affine": {}}]), r"train.augment: entry"),
        (lambda p: p["tune"].update(folds=[5]), r"tune.folds \[5\] names fold\(s\) \[5\]"),
        (lambda p: p["tune"]["space"].update(lr={"low": 0.1, "high": 0.01}), r"tune.space.lr="),
        (lambda p: p["tune"].update(grace_seconds=1), r"tune.grace_seconds=1.0 is out of range"),
        (lambda p: p["synthetic"].update(label_noise=2), r"synthetic.label_noise=2.0"),
        (
            lambda p: p["train"].update(average_last_fraction=0.5, keep_epoch="best"),
            r"train.average_last_fraction=0.5 keeps the mean .* set train.keep_epoch to last",
        ),
        (lambda p: p["train"].update(average_last_fraction=1.5), r"train.average_last_fraction=1.5 is out of range"),
        (
            lambda p: p["train"].update(low_res_fraction=1),
            r"train.low_res_fraction=1.0 is out of range: it must be 0 \(off\) or the fraction",
        ),
        (
            lambda p: p["train"].update(low_res_scale=1),
            r"train.low_res_scale=1.0 is out of range: it must be the smaller images' side",
        ),
        (
            lambda p: p["backbones"].update(small={"low_res_scale": 0}),
            r"backbones.small.low_res_scale=0.0 is out of range",
        ),
        (
            lambda p: p["train"].update(low_res_fraction=0.5, low_res_scale=0.1),
            r"backbones.resnet\w+: low_res_scale 0.1 shrinks the 48 px training images to 5 px; keep them at least 8 "
            r"px \(low_res_scale ≥ 0.17\)",
        ),
        (
            lambda p: p["train"].update(low_res_fraction=0.5, average_last_fraction=0.75, keep_epoch="last"),
            r"train.low_res_fraction=0.5 and average_last_fraction=0.75 overlap: .* keep their sum at most 1",
        ),
        (
            lambda p: p["train"].update(time_budget_minutes=0),
            r"train.time_budget_minutes=0.0 is out of range: it must be null \(no budget\) or minutes above 0",
        ),
        (
            lambda p: p["backbones"].update(bad={"time_budget_minutes": -5}),
            r"backbones.bad.time_budget_minutes=-5.0 is out of range",
        ),
        (
            lambda p: p["tune"]["space"].update(time_budget_minutes={"low": 1, "high": 9}),
            r"tune.space.time_budget_minutes is not a `train` setting",
        ),
        (
            lambda p: (p["backbones"].update(zoom={}), p["tta"].update(backbones={"zoom": [{}, {"scale": 1.1}]})),
            r"tta of zoom: tta view\(s\) \[\{'scale': 1.1\}\] zoom or shift by a fraction of a pixel, .* "
            r"\(export.opset is 13\); set export.opset: 20",
        ),
        (
            lambda p: p["tta"].update(views=[{"shift": [0.5, 0]}]),
            r"tta of \w+: tta view\(s\) \[\{'shift': \[0.5, 0\]\}\] zoom or shift",
        ),
    ],
)
def test_bad_values_are_refused_with_the_key_named(mutate, fragment):
    params = project_params()
    mutate(params)
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(params)


def test_whole_pixel_shifts_export_at_the_default_opset_and_zooms_at_opset_20():
    params = project_params()
    assert params["export"]["opset"] < 20
    params["tta"]["views"] = [{}, {"shift": [-3, 3], "hflip": True}, {"crop": 40, "shift": [2, 2]}]
    config_from_dict(params)
    params["tta"]["views"] = [{}, {"scale": 1.1}]
    params["export"]["opset"] = 20
    config_from_dict(params)


def test_precision_and_channels_last_may_be_left_to_measurement():
    params = project_params()
    params["train"].update(precision="auto", channels_last="auto")
    params["backbones"] = {"resnet10t": {"channels_last": True}, "resnet18": {"precision": "bf16"}}
    config = config_from_dict(params)
    assert (config.backbone("resnet10t").precision, config.backbone("resnet10t").channels_last) == ("auto", True)
    assert (config.backbone("resnet18").precision, config.backbone("resnet18").channels_last) == ("bf16", "auto")


def test_unknown_backbone_lists_the_known_ones():
    config = load_config(PROJECT / "params.yaml")
    with pytest.raises(ConfigError, match="not in params.yaml"):
        config.backbone("no_such_run")


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="project root"):
        load_config(tmp_path / "params.yaml")


def test_yaml_lists_become_tuples_and_numbers_become_floats(tmp_path):
    params = project_params()
    params["train"]["lr"] = 1
    params["train"]["weight_decay"] = "1e-4"  # PyYAML reads an exponent without a dot as text; DVC reads a number
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = load_config(path)
    assert isinstance(config.train.lr, float) and config.train.weight_decay == 1e-4
    assert isinstance(config.train.augment, tuple)
    assert config.folds.k == len(params["folds"]["ids"])


def test_every_key_of_every_section_is_in_the_project_params():
    """params.yaml is the one place values live: the classes declare no defaults to drift from it."""
    import dataclasses

    from pipeline.config import SECTIONS

    params = project_params()
    for section, cls in SECTIONS.items():
        declared = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        assert declared == set(params[section]) - {"model"}, section


def test_unknown_model_and_augment_fail_for_any_backbone_before_training():
    from pipeline.training.models import check_backbones

    params = project_params()
    params["backbones"] = {"resnet10t": {}, "second": {"model": "resnet_nope"}}
    with pytest.raises(ConfigError, match="backbones.second.model: unknown timm model 'resnet_nope'"):
        check_backbones(config_from_dict(params))
    params["backbones"] = {
        "resnet10t": {},
        "second": {"model": "resnet18", "augment_on": "loader", "augment": [{"HorizontalFlip": {"prob": 0.5}}]},
    }
    with pytest.raises(ConfigError, match="backbone second .*HorizontalFlip"):
        check_backbones(config_from_dict(params))


def test_unknown_optimizer_fails_with_its_key_and_close_names_before_training():
    from pipeline.training.models import check_backbones

    params = project_params()
    params["backbones"] = {"resnet10t": {}, "second": {"model": "resnet18", "optimizer": "adamww"}}
    with pytest.raises(
        ConfigError, match=r"backbones.second.optimizer .*unknown optimizer 'adamww'; similar names: \[.*'adamw'"
    ):
        check_backbones(config_from_dict(params))


def readme_overrides() -> list[tuple[str | None, str]]:
    """Each `-S` override the README shows, with the preset its `make fer2013-<preset>` line applies first."""
    readme = (PROJECT / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in readme.splitlines():
        preset = re.search(r"make fer2013-(\w+)", line)
        overrides = (
            re.findall(r"-S '([^']*)'", line) + re.findall(r'-S "([^"]*)"', line) + re.findall(r"-S ([^\s'\"`]+)", line)
        )
        # `-S key=value` in prose is a placeholder; so is <competition> in a path, which stands for a name.
        found += [(preset and preset[1], re.sub(r"<[^>]+>", "name", o)) for o in overrides if "." in o.split("=")[0]]
    return found


def test_every_params_override_the_readme_shows_applies_and_validates(tmp_path):
    """The README's overrides, applied as DVC applies them (after the preset a `make` line names), give a valid
    config."""
    from pipeline.commands.preset import apply_preset

    found = readme_overrides()
    overrides = [o for _, o in found]
    assert any(o.startswith("++data.class_names=") for o in overrides) and any("group_pattern" in o for o in overrides)
    assert any(preset == "cpu" for preset, _ in found)
    for preset, override in found:
        params = tmp_path / "params.yaml"
        shutil.copy(PROJECT / "params.yaml", params)
        if preset:
            apply_preset(PROJECT / "presets" / f"fer2013-{preset}.yaml", params)
        apply_overrides(str(params), [override])
        load_config(params)


@pytest.mark.parametrize(
    ("section", "key", "fix"),
    [
        ("train", "tta", r"train: tta is no training setting any more: .* top-level `tta` section"),
        ("train", "checkpoint", r"train: checkpoint is now keep_epoch"),
        ("train", "init_checkpoint", r"train: init_checkpoint is now pretrained"),
        ("train", "init_weights", r"train: init_weights is now pretrained"),
    ],
)
def test_a_key_of_an_earlier_params_file_is_refused_with_where_it_went(section, key, fix):
    params = project_params()
    params[section][key] = params[section].get(key, "last")
    with pytest.raises(ConfigError, match=fix):
        config_from_dict(params)


def test_a_params_file_without_the_tta_section_says_where_the_views_went():
    params = project_params()
    del params["tta"]
    with pytest.raises(
        ConfigError, match=r"section\(s\) \['tta'\] missing \(test-time views moved there from train.tta\)"
    ):
        config_from_dict(params)
