import pytest
import yaml

from pipeline.config import ConfigError, config_from_dict, load_config
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


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p["train"].update(epohcs=3), "epohcs"),
    (lambda p: p.update(trian={}), "trian"),
    (lambda p: p["backbones"].update(bad={"lr": -1.0}), "train.lr"),
    (lambda p: p["train"].update(precision="fp8"), "precision"),
    (lambda p: p["folds"].update(ids=[0, 2]), "folds.ids"),
    (lambda p: p["train"].update(epochs="ten"), "train.epochs"),
])
def test_bad_values_are_refused_with_the_key_named(mutate, fragment):
    params = project_params()
    mutate(params)
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(params)


def test_unknown_backbone_lists_the_known_ones():
    config = load_config(PROJECT / "params.yaml")
    with pytest.raises(ConfigError, match="not in params.yaml"):
        config.backbone("no_such_run")


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="project root"):
        load_config(tmp_path / "params.yaml")


def test_yaml_lists_become_tuples_and_ints_become_floats(tmp_path):
    params = project_params()
    params["train"]["lr"] = 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = load_config(path)
    assert isinstance(config.train.lr, float)
    assert isinstance(config.train.augment, tuple)
    assert config.folds.k == len(params["folds"]["ids"])
