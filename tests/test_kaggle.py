"""The Kaggle round trip through the real kaggle client (its CLI, and its Python API inside the pipeline's
`download` stage and `submit` command) against the stand-in competition server in kaggle_standin.py."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import requests
import timm
import urllib3
import yaml

from pipeline.data import parse_labels
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import METRICS, decisions
from pipeline.evaluation.ordinal import classes_at, grades_of, one_hot
from pipeline.ingest.synthetic import ATTRIBUTES
from pipeline.kaggle.api import Kaggle, KaggleError, competition_slug
from pipeline.stages.synthesize import write_competition
from tests.conftest import ALWAYS_RUN, PROJECT, TINY, make_project, project_params, repro, stages_run, tiny_params
from tests.hub_cache import fabricate
from tests.kaggle_standin import Competition, StandIn, StoredSubmission

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


@pytest.fixture
def closed_port():
    """A local port that refuses connections: bound, never listening, and held so that nothing else takes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def clean_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """No credentials or proxies from this machine: a fresh HOME, no KAGGLE_* or *_proxy variables, the project
    importable."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and not k.lower().endswith("_proxy")}
    return {
        **env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONPATH": str(PROJECT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    }


def run(command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def pipeline_submit(file: Path, prepared: Path, env: dict, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    return run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "submit",
            str(file),
            "-m",
            "test run",
            "-c",
            SLUG,
            "--data",
            str(prepared),
            "--wait",
            "120",
            *options,
        ],
        env,
        cwd,
    )  # returns once scored; 120 s only bounds a hang


def pipeline_download(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    """`python -m pipeline download` (as dvc.yaml runs it) of the stand-in competition, into tmp_path/data/kaggle."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(data={**tiny_params()["data"], "source": f"data/kaggle/{SLUG}.zip"})))
    return run(
        [sys.executable, "-m", "pipeline", "download", "--params", str(params), "--out", "data/kaggle"], env, tmp_path
    )


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


def failed_with_one_line(done: subprocess.CompletedProcess) -> str:
    """The `error: ...` line of a command that failed as it should: exit status 1, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr[-3000:]
    return last


def test_kaggle_cli_downloads_submits_and_lists_the_score(standin, served, tmp_path):
    env = clean_env(tmp_path, standin.env())
    downloaded = run([KAGGLE_CLI, "competitions", "download", "-c", SLUG, "-p", str(tmp_path / "files")], env, tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "files" / f"{SLUG}.zip").read_bytes() == served[0].archive
    perfect = answers_as_submission(served, tmp_path)
    submitted = run(
        [KAGGLE_CLI, "competitions", "submit", "-c", SLUG, "-f", str(perfect), "-m", "all right"], env, tmp_path
    )
    assert submitted.returncode == 0 and "Successfully submitted" in submitted.stdout, submitted.stderr
    listings = [run([KAGGLE_CLI, "competitions", "submissions", "-c", SLUG], env, tmp_path) for _ in range(2)]
    assert "PENDING" in listings[0].stdout and "COMPLETE" in listings[1].stdout
    assert "1.00000" in listings[1].stdout and "all right" in listings[1].stdout
    assert_never_shown(standin.key, downloaded, submitted, *listings)


def served_synthetic(tmp_path_factory, metric: str, **synthetic) -> tuple[Competition, Path]:
    """A tiny synthetic competition (TINY with `synthetic` overrides) served by the stand-in, scored by `metric`."""
    root = tmp_path_factory.mktemp(metric) / "synthetic"
    write_competition(dataclasses.replace(TINY, **synthetic), root)
    answers = pd.read_csv(root / "answers.csv", dtype=str)
    return Competition(zipped(root / "competition"), answers, metric=metric), root


def submit_ensemble(root: Path, env: dict, standin: StandIn) -> StoredSubmission:
    """`python -m pipeline submit submissions/ensemble.csv --wait`: what the stand-in stored, scored."""
    done = run(
        [sys.executable, "-m", "pipeline", "submit", "submissions/ensemble.csv", "-m", "x", "--wait", "120"], env, root
    )
    assert done.returncode == 0, done.stderr
    return standin.submissions[SLUG][0]


def downloading_params(epochs: int, **sections: dict) -> dict:
    """Tiny params whose data.source is the stand-in's download: one backbone, two folds, `epochs`."""
    one_backbone = {"backbones": {"resnet10t": {}}, "folds": {**project_params()["folds"], "ids": [0, 1]}}
    params = tiny_params(**{**one_backbone, **sections})
    params["data"] = {**params["data"], "source": f"data/kaggle/{SLUG}.zip"}
    params["train"] = {**params["train"], "epochs": epochs}
    return params


@pytest.fixture(scope="module")
def served_probabilities(tmp_path_factory) -> tuple[Competition, Path]:
    """The tiny synthetic competition with a sample asking for one probability column per class, scored by
    log-loss."""
    return served_synthetic(tmp_path_factory, "log_loss", submission_form="probability")


@pytest.mark.slow
def test_dvc_repro_downloads_a_log_loss_competition_then_submit_reports_its_score(served_probabilities, tmp_path):
    """Only data.source set: the probability form is read from the sample, log-loss is the metric everywhere, and
    the submission is tempered probabilities in the sample's columns."""
    params = downloading_params(epochs=2)
    with StandIn({SLUG: served_probabilities[0]}) as standin:
        env = clean_env(tmp_path, standin.env())
        root = make_project(tmp_path / "project", params, env)
        first = repro(root, env, "submission", "report")
        assert {"download", "prepare", "train@resnet10t-0", "submission", "report"} <= stages_run(first)
        assert (root / "data" / "kaggle" / f"{SLUG}.zip").read_bytes() == served_probabilities[0].archive
        calls_after_first = list(standin.calls)
        again = repro(root, env, "submission", "report")
        assert stages_run(again) == ALWAYS_RUN and standin.calls == calls_after_first  # nothing fetched twice

        submission = pd.read_csv(root / "submissions" / "ensemble.csv", dtype={"id": str})
        sample = pd.read_csv(served_probabilities[1] / "competition" / "sample_submission.csv", dtype={"id": str})
        assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == sample["id"].tolist()
        probs = submission[sample.columns[1:]].to_numpy()
        assert ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(1), 1, atol=1e-5)
        blended = pd.read_csv(root / "ensemble" / "test.csv", dtype={"id": str}).set_index("id").loc[submission["id"]]
        for column in sample.columns[1:]:  # each class's column holds that class's probability
            assert np.allclose(submission[column], blended[column], atol=1e-6), column
        ensemble = json.loads((root / "metrics" / "ensemble.json").read_text())
        weights = json.loads((root / "ensemble" / "weights.json").read_text())
        assert ensemble["metric"] == weights["metric"] == "log_loss" and weights["sharpness"] is not None
        report = (root / "report" / "report.md").read_text()
        assert "| OOF log_loss |" in report and "| OOF acc |" in report
        assert (
            f"Expected leaderboard log_loss of submissions/ensemble.csv: about its OOF {ensemble['score']:.4f}"
            in report
        )
        assert f"powered by {weights['sharpness']:.2f}" in report

        done = run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "submit",
                "submissions/ensemble.csv",
                "-m",
                "first try",
                "--wait",
                "120",
            ],
            env,
            root,
        )
        assert done.returncode == 0, done.stderr
        stored = standin.submissions[SLUG][0]
        assert stored.content == (root / "submissions" / "ensemble.csv").read_bytes()
        assert stored.description.startswith("first try") and "commit " in stored.description
        assert f"OOF log_loss {ensemble['score']:.4f}" in stored.description
        assert f"score: public {stored.public_score}, private {stored.private_score}" in done.stdout
        answers = served_probabilities[0].answers
        truth = answers["label"].map({name: i for i, name in enumerate(sample.columns[1:])}).to_numpy()
        by_answer = submission.set_index("id").loc[answers["id"], sample.columns[1:]].to_numpy()
        half = len(answers) // 2
        assert float(stored.public_score) == pytest.approx(METRICS["log_loss"](by_answer[:half], truth[:half]), 1e-4)
        assert float(stored.private_score) == pytest.approx(METRICS["log_loss"](by_answer[half:], truth[half:]), 1e-4)
        assert_never_shown(standin.key, done)


@pytest.fixture(scope="module")
def served_grades(tmp_path_factory) -> tuple[Competition, Path]:
    """The synthetic graded competition (smile grades 0-4 in a label table), scored by quadratic weighted kappa."""
    return served_synthetic(tmp_path_factory, "qwk", task="ordinal", train_per_class=40)


@pytest.mark.slow
def test_dvc_repro_on_a_graded_competition_submits_grades_as_kaggle_scores_them_by_kappa(served_grades, tmp_path):
    """data.source and competition.metric: qwk set (a label sample does not say its labels are grades): the grade is
    regressed, cut where OOF puts the cuts when that beats the most probable class, and Kaggle scores it by kappa.
    Also the pipeline's run on a label-table download (the sample's own id column and code labels), fine-tuned from
    timm's default weights (`pretrained: true`) in a Hugging Face cache, offline."""
    params = downloading_params(epochs=3, competition={"metric": "qwk"}, backbones={"resnet10t": {"pretrained": True}})
    commit = fabricate(tmp_path / "hf" / "hub", "timm/resnet10t.c3_in1k", timm.create_model("resnet10t").state_dict())
    with StandIn({SLUG: served_grades[0]}) as standin:
        env = clean_env(tmp_path, {**standin.env(), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
        root = make_project(tmp_path / "project", params, env)
        repro(root, env, "submission")
        meta = json.loads((root / "data" / "prepared" / "meta.json").read_text())
        assert meta["layout"] == "label_table" and meta["targets"] == ["grade"]
        for fold in (0, 1):
            run_json = json.loads((root / "models" / "resnet10t" / f"fold{fold}" / "run.json").read_text())
            assert run_json["pretrained"] == f"timm/resnet10t.c3_in1k@{commit}"
        sample = pd.read_csv(served_grades[1] / "competition" / "sample_submission.csv", dtype=str)
        submission = pd.read_csv(root / "submissions" / "ensemble.csv", dtype=str)
        assert list(submission.columns) == ["id_code", "diagnosis"] and submission["id_code"].equals(sample["id_code"])
        weights = json.loads((root / "ensemble" / "weights.json").read_text())
        ensemble = json.loads((root / "metrics" / "ensemble.json").read_text())
        assert weights["metric"] == ensemble["metric"] == "qwk"
        blended = pd.read_csv(root / "ensemble" / "test.csv", dtype={"id": str}).set_index("id").loc[sample["id_code"]]
        # The submitted grades: the most probable, or where OOF chose so the blended grade cut at the fitted points
        # (tests/test_ordinal.py has members whose cut grade must win).
        if weights["cuts"] is None:
            expected = blended[list("01234")].to_numpy().argmax(axis=1)
        else:
            expected = classes_at(grades_of(blended["grade"].to_numpy(), 5), np.array(weights["cuts"]))
            assert ensemble["score"] == ensemble["cut_score"] > ensemble["best_single_score"]
        assert submission["diagnosis"].astype(int).tolist() == expected.tolist()

        stored = submit_ensemble(root, env, standin)
        answers = served_grades[0].answers
        by_answer = submission.set_index("id_code").loc[answers["id"], "diagnosis"].astype(int).to_numpy()
        truth, half = answers["label"].astype(int).to_numpy(), len(answers) // 2
        qwk = METRICS["qwk"]
        assert float(stored.public_score) == pytest.approx(qwk(one_hot(by_answer[:half], 5), truth[:half]), 1e-4)
        assert float(stored.private_score) == pytest.approx(qwk(one_hot(by_answer[half:], 5), truth[half:]), 1e-4)


@pytest.fixture(scope="module")
def served_attributes(tmp_path_factory) -> tuple[Competition, Path]:
    """The synthetic multi-label competition (attributes separated by spaces in a label table), scored by mean F1."""
    return served_synthetic(tmp_path_factory, "mean_f1", task="multi_label", train_per_class=30)


@pytest.mark.slow
def test_dvc_repro_on_a_multi_label_competition_submits_the_labels_each_image_is_decided_to_have(
    served_attributes, tmp_path
):
    """Only data.source set: the label sets are read from the table, mean F1 follows from the label sample, and the
    submission lists each image's decided labels, as Kaggle scores them."""
    params = downloading_params(epochs=3)
    with StandIn({SLUG: served_attributes[0]}) as standin:
        env = clean_env(tmp_path, standin.env())
        root = make_project(tmp_path / "project", params, env)
        repro(root, env, "submission")
        meta = json.loads((root / "data" / "prepared" / "meta.json").read_text())
        assert meta["multi_label"] and meta["classes"] == sorted(ATTRIBUTES)
        weights = json.loads((root / "ensemble" / "weights.json").read_text())
        assert weights["metric"] == "mean_f1" and weights["sharpness"] is None
        sample = pd.read_csv(served_attributes[1] / "competition" / "sample_submission.csv", dtype=str)
        submission = pd.read_csv(root / "submissions" / "ensemble.csv", dtype=str, keep_default_na=False)
        assert list(submission.columns) == ["image_name", "tags"]
        assert submission["image_name"].equals(sample["image_name"])
        blended = pd.read_csv(root / "ensemble" / "test.csv", dtype={"id": str}).set_index("id")
        decided = decisions(blended.loc[sample["image_name"], meta["classes"]].to_numpy())
        names = np.array(meta["classes"])
        assert submission["tags"].tolist() == [" ".join(names[row > 0]) for row in decided]

        stored = submit_ensemble(root, env, standin)
        answers = served_attributes[0].answers
        truth = parse_labels(answers["label"], meta["classes"], multi_label=True)
        by_answer = submission.set_index("image_name").loc[answers["id"], "tags"]
        guess = parse_labels(by_answer, meta["classes"], multi_label=True)
        half, mean_f1 = len(answers) // 2, METRICS["mean_f1"]
        assert float(stored.public_score) == pytest.approx(mean_f1(guess[:half], truth[:half]), 1e-4)
        assert float(stored.private_score) == pytest.approx(mean_f1(guess[half:], truth[half:]), 1e-4)


@pytest.mark.parametrize(
    "damage, complaint",
    [
        (lambda frame: frame.iloc[:-1], "rows"),
        (lambda frame: frame.rename(columns={"label": "emotion"}), "header"),
        (lambda frame: frame.assign(label=frame["label"].where(frame.index != 3, "")), "empty"),
        (lambda frame: frame.iloc[::-1], "order"),
        (lambda frame: frame.assign(label="joy"), "are not among the competition's labels"),
    ],
)
def test_malformed_csv_is_refused_before_any_upload(standin, served, prepared, tmp_path, damage, complaint):
    bad = tmp_path / "bad.csv"
    damage(perfect_submission(served)).to_csv(bad, index=False)
    done = pipeline_submit(bad, prepared, clean_env(tmp_path, standin.env()), tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert complaint in done.stderr and str(bad) in done.stderr
    assert standin.calls == []


def test_dry_run_validates_and_uploads_nothing(standin, served, prepared, tmp_path):
    done = pipeline_submit(
        answers_as_submission(served, tmp_path), prepared, clean_env(tmp_path, standin.env()), tmp_path, "--dry-run"
    )
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and "message: test run [perfect.csv; OOF n/a; commit" in done.stdout
    assert standin.calls == []


def test_server_error_on_upload_exits_non_zero_with_a_clear_message(standin, served, prepared, tmp_path):
    standin.fail_next("StartSubmissionUpload", 500)
    done = pipeline_submit(
        answers_as_submission(served, tmp_path), prepared, clean_env(tmp_path, standin.env()), tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Kaggle server error (HTTP 500" in done.stderr
    assert SLUG not in standin.submissions


def test_server_error_on_download_leaves_no_archive(standin, tmp_path):
    standin.fail_next("DownloadDataFiles", 500)
    done = pipeline_download(tmp_path, clean_env(tmp_path, standin.env()))
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


def kaggle_command(command: str, served, prepared: Path, tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    if command == "download":
        return pipeline_download(tmp_path, env)
    return pipeline_submit(answers_as_submission(served, tmp_path), prepared, env, tmp_path)


@pytest.mark.parametrize("command", ["download", "submit"])
@pytest.mark.parametrize("refusal", [401, None], ids=["http-401", "inactive"])
def test_refused_access_token_is_one_line_naming_its_source(standin, served, prepared, tmp_path, command, refusal):
    """The client checks a KAGGLE_API_TOKEN while signing in: a refusal there used to escape as an HTTPError
    traceback."""
    standin.token_refusal = refusal
    wrong = "wrong-token-not-to-be-printed"
    done = kaggle_command(command, served, prepared, tmp_path, clean_env(tmp_path, standin.env(KAGGLE_API_TOKEN=wrong)))
    error = failed_with_one_line(done)
    assert error.startswith("error: signing in to Kaggle: Kaggle ")
    assert (
        "refused the credentials from $KAGGLE_API_TOKEN (HTTP 401"
        if refusal
        else "did not accept the credentials from $KAGGLE_API_TOKEN"
    ) in error
    assert "set KAGGLE_API_TOKEN to it, or unset KAGGLE_API_TOKEN" in error
    assert set(standin.calls) == {"IntrospectToken"}  # nothing downloaded or submitted
    assert_never_shown(wrong, done)
    assert not (tmp_path / "data" / "kaggle").exists()


def test_valid_access_token_signs_in_and_downloads(standin, served, tmp_path):
    done = pipeline_download(tmp_path, clean_env(tmp_path, standin.env(KAGGLE_API_TOKEN=standin.token)))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "kaggle" / f"{SLUG}.zip").read_bytes() == served[0].archive
    assert standin.calls[-2:] == ["DownloadDataFiles", f"GET /storage/{SLUG}.zip"]
    assert_never_shown(standin.token, done)


def test_inactive_access_token_is_refused_even_with_an_api_key_beside_it(standin, tmp_path):
    """The client signs in with the key then, but its calls still send the token; each would be refused."""
    standin.token_refusal = None
    inactive = "inactive-token-not-to-be-printed"
    done = pipeline_download(
        tmp_path,
        clean_env(
            tmp_path, standin.env(KAGGLE_API_TOKEN=inactive, KAGGLE_USERNAME=standin.username, KAGGLE_KEY=standin.key)
        ),
    )
    error = failed_with_one_line(done)
    assert (
        "signing in to Kaggle: Kaggle did not accept the credentials from $KAGGLE_API_TOKEN; " in error
        and "unset KAGGLE_API_TOKEN" in error
    )
    assert set(standin.calls) == {"IntrospectToken"}
    assert_never_shown(inactive, done)
    assert_never_shown(standin.key, done)


@pytest.mark.parametrize("command", ["download", "submit"])
@pytest.mark.parametrize(
    "variables, credentials",
    [
        # The stand-in's http://localhost API through HTTP_PROXY, signing in with a token: fails while signing in.
        (("HTTP_PROXY", "http_proxy"), "token"),
        # Kaggle's own https://api.kaggle.com through HTTPS_PROXY, with an API key: fails at the first call.
        (("HTTPS_PROXY",), "key"),
    ],
    ids=["http-proxy-token", "https-proxy-key"],
)
def test_unreachable_proxy_is_one_line_naming_its_variable(
    standin, served, prepared, tmp_path, closed_port, command, variables, credentials
):
    password = "proxy-password-not-to-be-printed"
    proxy = f"http://proxy-user:{password}@127.0.0.1:{closed_port}"
    env = standin.env(KAGGLE_API_TOKEN=standin.token) if credentials == "token" else standin.env()
    if "HTTP_PROXY" not in variables:
        env = {k: v for k, v in env.items() if k not in ("KAGGLE_API_ENVIRONMENT", "HTTP_PROXY", "http_proxy")}
    done = kaggle_command(
        command, served, prepared, tmp_path, clean_env(tmp_path, {**env, **dict.fromkeys(variables, proxy)})
    )
    error = failed_with_one_line(done)
    named = " and ".join(variables)
    assert f"cannot connect to the proxy http://127.0.0.1:{closed_port} set in {named} (" in error
    assert f"or unset {named} to connect to Kaggle directly" in error
    assert error.startswith("error: signing in to Kaggle: " if credentials == "token" else "error: ")
    assert standin.calls == []
    for secret in (password, "proxy-user", standin.key, standin.token):
        assert_never_shown(secret, done)


KEY = "secret-key-in-an-error-0123"
KAGGLE_CALL = "https://api.kaggle.com/v1/competitions.CompetitionApiService/DownloadDataFiles"
SIGNED = "https://storage.googleapis.com/kaggle-competitions/x.zip?X-Goog-Signature=signature-not-to-be-printed"


def sent(url: str = KAGGLE_CALL) -> requests.PreparedRequest:
    return requests.Request("POST", url).prepare()


def answered(status: int, url: str = KAGGLE_CALL) -> requests.Response:
    response = requests.Response()
    response.status_code, response.url, response.request = status, url, sent(url)
    return response


FAILURES = [  # (proxy variable set, what the client raises, what the message says)
    (
        None,
        requests.ConnectionError(
            "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded (Caused by NameResolutionError("
            "\"Failed to resolve 'api.kaggle.com' ([Errno -3] Temporary failure in name resolution)\"))",
            request=sent(),
        ),
        "cannot reach Kaggle at api.kaggle.com ([Errno -3] Temporary failure in name resolution); check the network "
        "connection",
    ),
    (
        None,
        requests.exceptions.ConnectTimeout(
            "Connection to api.kaggle.com timed out. (connect timeout=10)", request=sent()
        ),
        "cannot reach Kaggle at api.kaggle.com",
    ),
    (
        None,
        requests.exceptions.ReadTimeout("Read timed out. (read timeout=300)", request=sent(SIGNED)),
        "the connection to Kaggle at storage.googleapis.com failed (Read timed out",
    ),
    (
        None,
        requests.exceptions.ChunkedEncodingError(
            urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(10 bytes read, 90 more expected)")
        ),
        "failed (Connection broken: IncompleteRead(10 bytes read, 90 more expected)); check the network connection",
    ),
    (
        None,
        urllib3.exceptions.ProtocolError("Connection broken: InvalidChunkLength(got length b'', 0 bytes read)"),
        "check the network connection",
    ),
    (None, urllib3.exceptions.ReadTimeoutError(None, SIGNED, "Read timed out."), "check the network connection"),
    (
        None,
        ConnectionResetError(104, "Connection reset by peer"),
        "cannot reach Kaggle at api.kaggle.com ([Errno 104] Connection reset by peer)",
    ),
    (
        None,
        requests.exceptions.SSLError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate", request=sent()
        ),
        "the secure connection to api.kaggle.com failed ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "self-signed certificate); "
        "check the computer's date and time; if your network inspects HTTPS, set REQUESTS_CA_BUNDLE",
    ),
    (
        None,
        requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0),
        "the request to api.kaggle.com failed (JSONDecodeError",
    ),
    (
        None,
        requests.HTTPError(f"403 Client Error: Forbidden for url: {SIGNED}", response=answered(403, SIGNED)),
        "Kaggle refused the credentials from $KAGGLE_USERNAME/$KAGGLE_KEY (HTTP 403: 403 Client Error: Forbidden for "
        "url: "
        "https://storage.googleapis.com/kaggle-competitions/x.zip?...). If they are right, accept the competition's "
        "rules",
    ),
    (None, SystemExit(1), "the kaggle client gave up"),
    (
        None,
        ValueError("Downloaded file size (10) does not match expected size (100)"),
        "the kaggle client failed (ValueError: Downloaded file size (10) does not match expected size (100))",
    ),
    (
        None,
        OSError(28, "No space left on device"),
        "the kaggle client failed (OSError: [Errno 28] No space left on device)",
    ),
    (
        None,
        RuntimeError(f"unexpected answer for key {KEY}"),
        "the kaggle client failed (RuntimeError: unexpected answer for key ***)",
    ),
    (
        "HTTPS_PROXY",
        requests.exceptions.ProxyError(
            "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded (Caused by ProxyError("
            "'Unable to connect to proxy', OSError('Tunnel connection failed: 403 Forbidden')))",
            request=sent(),
        ),
        "cannot connect to the proxy http://proxy.example:3128 set in HTTPS_PROXY (Tunnel connection failed: 403 "
        "Forbidden); "
        "check that this address is right and the proxy is running, or unset HTTPS_PROXY to connect to Kaggle directly",
    ),
    (
        "https_proxy",
        urllib3.exceptions.ProxyError("Unable to connect to proxy", ConnectionRefusedError(111, "Connection refused")),
        "cannot connect to the proxy http://proxy.example:3128 set in https_proxy ([Errno 111] Connection refused)",
    ),
    (
        "ALL_PROXY",
        requests.exceptions.ReadTimeout("Read timed out. (read timeout=300)", request=sent()),
        "at api.kaggle.com through the proxy http://proxy.example:3128 set in ALL_PROXY failed (Read timed out. (read "
        "timeout=300)); check the network connection and that proxy, "
        "or unset ALL_PROXY to connect directly",
    ),
    (
        "HTTPS_PROXY",
        requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", request=sent()),
        "if the proxy http://proxy.example:3128 set in HTTPS_PROXY inspects HTTPS, set REQUESTS_CA_BUNDLE to its CA "
        "certificate file, or unset HTTPS_PROXY",
    ),
    (
        "HTTPS_PROXY",
        requests.HTTPError("407 Proxy Authentication Required", response=answered(407)),
        "the proxy http://proxy.example:3128 set in HTTPS_PROXY asks for a login (HTTP 407",
    ),
]


@pytest.mark.parametrize(
    "proxy, error, expected",
    FAILURES,
    ids=[f"{type(error).__name__}{'-' + proxy if proxy else ''}" for proxy, error, _ in FAILURES],
)
def test_every_failure_of_the_client_is_a_kaggle_error_saying_what_to_do(monkeypatch, proxy, error, expected):
    """requests' and urllib3's exception hierarchies, and what the kaggle client raises itself, as one message each."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    if proxy:
        monkeypatch.setenv(proxy, "http://proxy-user:proxy-password@proxy.example:3128")

    def fails():
        raise error

    kaggle = Kaggle(SimpleNamespace(config_values={"username": "someone", "key": KEY}), "$KAGGLE_USERNAME/$KAGGLE_KEY")
    with pytest.raises(KaggleError) as raised:
        kaggle.call("download of competition 'x'", fails)
    message = str(raised.value)
    assert message.startswith("download of competition 'x': ") and expected in message, message
    for secret in (KEY, "proxy-password", "proxy-user", "signature-not-to-be-printed"):
        assert secret not in message


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
    assert (
        f"{key_file} is readable by other users" in done.stdout + done.stderr
        and "chmod 600" in done.stdout + done.stderr
    )
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

    def git(*args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

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
