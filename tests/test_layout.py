"""dvc.yaml is the map of the code: one stage, one leaf module, and deps that cover what it imports."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params
from tests.imports import PROJECT, closure, direct_imports, module_path

DVC_YAML = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
STAGE_MODULES = sorted(p.stem for p in (PROJECT / "pipeline" / "stages").glob("[!_]*.py"))


def stage_body(name: str) -> dict:
    return STAGES[name].get("do", STAGES[name])


def stage_command(name: str) -> str:
    return " ".join(stage_body(name)["cmd"].split())


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(PROJECT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def test_every_stage_runs_its_own_module_and_every_stage_module_is_a_stage():
    assert sorted(STAGES) == STAGE_MODULES
    for name in STAGES:
        assert stage_command(name).startswith(f"python -m pipeline {name} "), name


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_every_project_module_the_stage_imports(stage):
    deps = [str(dep) for dep in stage_body(stage)["deps"]]
    imported = closure(f"pipeline.stages.{stage}") | closure("pipeline.__main__")
    missing = sorted(str(p.relative_to(PROJECT)) for p in imported if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in its deps"


@pytest.mark.parametrize("stage", STAGE_MODULES)
def test_stage_modules_are_leaves(stage):
    others = {f"pipeline.stages.{name}" for name in STAGE_MODULES if name != stage} | {"pipeline.commands"}
    imported = direct_imports(module_path(f"pipeline.stages.{stage}"))
    assert not {m for m in imported if m in others or m.startswith("pipeline.commands.")}, (
        f"pipeline/stages/{stage}.py imports another stage or a command; move what they share into a shared module"
    )


def test_deps_name_no_file_that_does_not_exist():
    for name in STAGES:
        for dep in stage_body(name)["deps"]:
            if str(dep).startswith("pipeline"):
                assert (PROJECT / dep).exists(), f"stage {name}: dep {dep} does not exist"


def test_a_source_path_with_a_space_reaches_prepare_as_one_argument(tmp_path, monkeypatch):
    """dvc.yaml substitutes params into the command line: the source must stay one word."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(PROJECT / "dvc.yaml", root / "dvc.yaml")
    params = tiny_params()
    params["data"]["source"] = "my downloads/faces competition.zip"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    from dvc.repo import Repo

    monkeypatch.chdir(root)  # DVC reads params.yaml relative to the working directory, as `dvc repro` runs
    with Repo(str(root)) as repo:
        (stage,) = repo.stage.collect("prepare")
        words = shlex.split(stage.cmd)
    assert words[words.index("--source") + 1] == "my downloads/faces competition.zip"


def rendered_stage_names(params: dict) -> set[str]:
    """The stage names `dvc repro` runs for `params`, foreach and matrix stages expanded."""
    names = set()
    for name, body in STAGES.items():
        if "foreach" in body:  # ${backbones}, ${distill.students}: a mapping's keys or a list's items
            found = params
            for key in body["foreach"].strip("${}").split("."):
                found = found[key]
            names |= {f"{name}@{key}" for key in found}
        elif "matrix" in body:
            names |= {f"{name}@{b}-{f}" for b in params["backbones"] for f in params["folds"]["ids"]}
        else:
            names.add(name)
    return names


def test_committed_dvc_lock_is_the_current_codes_and_params():
    """dvc.lock is committed with the code (DVC's convention): it must record the code and params of this
    commit, or `dvc metrics diff` compares against a run of other code. Refresh it with `make run`."""
    import hashlib

    lock = yaml.safe_load((PROJECT / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert set(lock) == rendered_stage_names(params), "dvc.lock lists other stages than dvc.yaml runs; run `make run`"
    for name, entry in lock.items():
        for dep in entry.get("deps", []):
            if dep["path"].startswith("pipeline/"):
                current = hashlib.md5((PROJECT / dep["path"]).read_bytes()).hexdigest()
                assert dep["md5"] == current, (
                    f"dvc.lock: stage {name} ran another {dep['path']}; run `make run` and commit dvc.lock"
                )
        for key, value in entry.get("params", {}).get("params.yaml", {}).items():
            section, _, rest = key.partition(".")
            expected = params[section]
            for part in filter(None, rest.split(".")):
                expected = expected[part]
            assert value == expected, (
                f"dvc.lock: stage {name} ran with another {key}; run `make run` and commit dvc.lock"
            )
