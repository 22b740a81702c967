"""The Kaggle round trip through the real kaggle client (its CLI, and its Python API inside the pipeline's
`download` stage and `submit` command) against the stand-in competition server in kaggle_standin.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.kaggle_api import competition_slug
from tests.conftest import PROJECT, tiny_params
from tests.kaggle_standin import Competition, StandIn
from tests.test_e2e import make_project, repro, stages_run

SLUG = "tiny-faces"
KAGGLE_CLI = str(Path(sys.executable).parent / "kaggle")


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(competition) -> tuple[Competition, Path]:
    """The tiny synthetic competition as Kaggle would serve it, and its folder."""
    answers = pd.read_csv(competition / "answers.csv", dtype=str)
    return Competition(zipped(competition / "competition"), answers), competition


@pytest.fixture
def standin(served):
    with StandIn({SLUG: served[0]}) as server:
        yield server


def clean_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """No credentials from this machine: a fresh HOME, no KAGGLE_* variables, the project importable."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and k.lower() not in ("http_proxy", "no_proxy")}
    return {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONPATH": str(PROJECT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra}


def run(command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def pipeline_submit(file: Path, prepared: Path, env: dict, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline", "submit", str(file), "-m", "test run", "-c", SLUG,
                "--data", str(prepared), "--wait", "10", *options], env, cwd)


def perfect_submission(served) -> pd.DataFrame:
    """The hidden answers in the shape of sample_submission.csv."""
    sample = pd.read_csv(served[1] / "competition" / "sample_submission.csv", dtype=str)
    return sample.assign(label=sample["id"].map(served[0].answers.set_index("id")["label"]))


def answers_as_submission(served, tmp_path: Path, name: str = "perfect.csv") -> Path:
    path = tmp_path / name
    perfect_submission(served).to_csv(path, index=False)
    return path


def assert_never_shown(secret: str, *outputs: subprocess.CompletedProcess) -> None:
    for done in outputs:
        assert secret not in done.stdout and secret not in done.stderr


def test_kaggle_cli_downloads_submits_and_lists_the_score(standin, served, tmp_path):
    env = clean_env(tmp_path, standin.env())
    downloaded = run([KAGGLE_CLI, "competitions", "download", "-c", SLUG, "-p", str(tmp_path / "files")], env, tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "files" / f"{SLUG}.zip").read_bytes() == served[0].archive
    perfect = answers_as_submission(served, tmp_path)
    submitted = run([KAGGLE_CLI, "competitions", "submit", "-c", SLUG, "-f", str(perfect), "-m", "all right"], env, tmp_path)
    assert submitted.returncode == 0 and "Successfully submitted" in submitted.stdout, submitted.stderr
    listings = [run([KAGGLE_CLI, "competitions", "submissions", "-c", SLUG], env, tmp_path) for _ in range(2)]
    assert "PENDING" in listings[0].stdout and "COMPLETE" in listings[1].stdout
    assert "1.00000" in listings[1].stdout and "all right" in listings[1].stdout
    assert_never_shown(standin.key, downloaded, submitted, *listings)


def test_dvc_repro_downloads_the_competition_then_submit_reports_its_score(standin, served, tmp_path):
    params = tiny_params(backbones={"resnet10t": {}}, folds={"ids": [0, 1], "seed": 42, "groups_csv": None})
    params["data"] = {**params["data"], "source": f"data/kaggle/{SLUG}.zip"}
    params["train"] = {**params["train"], "epochs": 2}
    params["tune"] = {**params["tune"], "enabled": False}
    env = clean_env(tmp_path, standin.env())
    root = make_project(tmp_path / "project", params, env)
    first = repro(root, env)
    assert {"download", "prepare", "train@resnet10t-0", "submission"} <= stages_run(first)
    assert (root / "data" / "kaggle" / f"{SLUG}.zip").read_bytes() == served[0].archive
    assert (root / "submissions" / "ensemble.csv").is_file()
    calls_after_first = list(standin.calls)
    assert stages_run(repro(root, env)) == set() and standin.calls == calls_after_first  # nothing fetched twice

    done = run([sys.executable, "-m", "pipeline", "submit", "submissions/ensemble.csv", "-m", "first try", "--wait", "10"], env, root)
    assert done.returncode == 0, done.stderr
    stored = standin.submissions[SLUG][0]
    assert stored.content == (root / "submissions" / "ensemble.csv").read_bytes()
    oof = pd.read_json(root / "metrics" / "ensemble.json", typ="series")["accuracy"]
    assert stored.description.startswith("first try") and f"OOF {oof:.4f}" in stored.description and "commit " in stored.description
    assert f"score: public {stored.public_score}, private {stored.private_score}" in done.stdout
    assert_never_shown(standin.key, done)


@pytest.mark.parametrize("damage, complaint", [
    (lambda frame: frame.iloc[:-1], "rows"),
    (lambda frame: frame.rename(columns={"label": "emotion"}), "header"),
    (lambda frame: frame.assign(label=frame["label"].where(frame.index != 3, "")), "empty"),
    (lambda frame: frame.iloc[::-1], "order"),
    (lambda frame: frame.assign(label="joy"), "not class names"),
])
def test_malformed_csv_is_refused_before_any_upload(standin, served, prepared, tmp_path, damage, complaint):
    bad = tmp_path / "bad.csv"
    damage(perfect_submission(served)).to_csv(bad, index=False)
    done = pipeline_submit(bad, prepared, clean_env(tmp_path, standin.env()), tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert complaint in done.stderr and str(bad) in done.stderr
    assert standin.calls == []


def test_dry_run_validates_and_uploads_nothing(standin, served, prepared, tmp_path):
    done = pipeline_submit(answers_as_submission(served, tmp_path), prepared, clean_env(tmp_path, standin.env()), tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and "message: test run [perfect.csv; OOF n/a; commit" in done.stdout
    assert standin.calls == []


def test_server_error_on_upload_exits_non_zero_with_a_clear_message(standin, served, prepared, tmp_path):
    standin.fail_next("StartSubmissionUpload", 500)
    done = pipeline_submit(answers_as_submission(served, tmp_path), prepared, clean_env(tmp_path, standin.env()), tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Kaggle server error (HTTP 500" in done.stderr
    assert SLUG not in standin.submissions


def test_server_error_on_download_leaves_no_archive(standin, tmp_path):
    standin.fail_next("DownloadDataFiles", 500)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(data={**tiny_params()["data"], "source": f"data/kaggle/{SLUG}.zip"})))
    done = run([sys.executable, "-m", "pipeline", "download", "--params", str(params), "--out", "data/kaggle"],
               clean_env(tmp_path, standin.env()), tmp_path)
    assert done.returncode == 1 and "HTTP 500" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "kaggle").exists()
    assert list((tmp_path / "data").iterdir()) == []  # no temporary leftovers either


def test_refused_credentials_are_named_by_source_never_by_value(standin, served, prepared, tmp_path):
    wrong = "wrong-key-not-to-be-printed"
    env = clean_env(tmp_path, standin.env(KAGGLE_USERNAME=standin.username, KAGGLE_KEY=wrong))
    done = pipeline_submit(answers_as_submission(served, tmp_path), prepared, env, tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refused the credentials from $KAGGLE_USERNAME/$KAGGLE_KEY (HTTP 401" in done.stderr
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in done.stderr  # says how to set them
    assert_never_shown(wrong, done)


def test_missing_credentials_say_how_to_set_them(standin, served, prepared, tmp_path):
    env = clean_env(tmp_path, {k: v for k, v in standin.env().items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")})
    done = pipeline_submit(answers_as_submission(served, tmp_path), prepared, env, tmp_path)
    assert done.returncode == 1 and "no Kaggle credentials found" in done.stderr
    assert "~/.kaggle/kaggle.json" in done.stderr and standin.calls == []


def test_kaggle_json_readable_by_others_is_warned_about_and_still_used(standin, served, prepared, tmp_path):
    env = clean_env(tmp_path, {k: v for k, v in standin.env().items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")})
    key_file = Path(env["HOME"]) / ".kaggle" / "kaggle.json"
    key_file.parent.mkdir()
    key_file.write_text(f'{{"username": "{standin.username}", "key": "{standin.key}"}}')
    key_file.chmod(0o644)
    done = pipeline_submit(answers_as_submission(served, tmp_path), prepared, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{key_file} is readable by other users" in done.stdout + done.stderr and "chmod 600" in done.stdout + done.stderr
    assert "score: public 1.00000, private 1.00000" in done.stdout
    assert_never_shown(standin.key, done)


def test_competition_slug_comes_from_the_source_path():
    assert competition_slug("data/kaggle/digit-recognizer.zip") == "digit-recognizer"
    assert competition_slug("data/synthetic/competition") is None
    assert competition_slug("../shared/data/fer2013.zip") is None
    with pytest.raises(ConfigError, match="data/kaggle/fer2013.zip"):
        competition_slug("kaggle:fer2013")
    with pytest.raises(ConfigError, match="<competition>.zip"):
        competition_slug("data/kaggle/Fer 2013.tar")


def test_submission_message_names_the_dvc_experiment_whose_outputs_are_in_the_workspace(tmp_path, monkeypatch):
    from pipeline.commands.submit import experiment_name

    monkeypatch.chdir(tmp_path)
    git = lambda *args: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True, text=True).stdout.strip()  # noqa: E731
    git("init", "-q")
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {a: 1}\n")
    git("add", "dvc.lock")
    git("commit", "-q", "-m", "baseline")
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {a: 2}\n")
    git("stash", "-q")  # an experiment commit holding the changed lock, stored where DVC keeps experiments
    git("update-ref", "refs/exps/ab/cdef/brisk-lark", git("rev-parse", "stash@{0}"))
    assert experiment_name() is None  # the workspace holds the baseline's outputs
    git("stash", "pop", "-q")
    assert experiment_name() == "brisk-lark"
