"""`python -m pipeline distribute` on a local Ray and on a two-node Ray cluster, with the real `dvc repro`.

The tuned and trained stages run as Ray tasks in scratch checkouts; the head restores them from DVC's
run-cache and runs the rest. Trained with the same thread count, a run's weights do not depend on where it
ran, so the distributed project must equal a serial one file for file, its timings aside.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from safetensors.torch import load_file

from pipeline.cluster.task import NODE_ROOT, run_step
from tests.conftest import ALWAYS_RUN, ctrl_c_reaches_child, make_project, repro, stages_run, tiny_params

ray = pytest.importorskip("ray", reason="Ray is the optional extra requirements-ray.txt")


def small_params(backbones: dict) -> dict:
    """Two folds of a small synthetic competition, two epochs: seconds a run, so that the runs' checkout,
    DVC and Ray costs show."""
    params = tiny_params(folds={**tiny_params()["folds"], "ids": [0, 1]}, backbones=backbones)
    params["synthetic"] = {**params["synthetic"], "train_per_class": 30, "test_size": 40}
    params["train"] = {**params["train"], "epochs": 2}
    return params


SMALL = small_params({"resnet10t": {}, "resnet10t_seed1": {"model": "resnet10t", "seed": 1}})
TRAINED = [f"train@{backbone}-{fold}" for backbone in SMALL["backbones"] for fold in SMALL["folds"]["ids"]]
UP_TO = "submission"  # bundle and export read what submission reads: the stages that matter here end with it
VENV_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def distribute(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "distribute", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)


def dvc_status(root: Path, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def lock_stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def without_model_hashes(stage: dict) -> dict:
    """A lock entry with the hashes of models/ left out: a run's folder holds its timings (run.json, history.csv)."""

    def entries(items: list[dict]) -> list[dict]:
        return [item if not item["path"].startswith("models") else {"path": item["path"]} for item in items]

    return {**stage, "deps": entries(stage.get("deps", [])), "outs": entries(stage.get("outs", []))}


def wait_for(condition, seconds: float, what: str):
    """Poll `condition` until it holds (its value returned) or `seconds` pass (the test fails naming `what`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"after {seconds} s still waiting for {what}")


def running_training() -> list[int]:
    """Ids of `pipeline train` processes started in a distribute scratch folder on this machine."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue  # gone, or not ours to read
        if b"pipeline" in command and b"train" in command and cwd.startswith(str(NODE_ROOT)):
            found.append(int(proc.name))
    return found


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for a parent that is not ours to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_cancelled_step_stops_its_whole_process_group(tmp_path):
    """What Ctrl-C on the head comes to in each task: the stage's process and everything it started end."""
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait"

    def started() -> list[int]:
        return [int(pid) for pid in pids.read_text().split()] if pids.exists() else []

    def interrupt_once_started() -> None:  # Ray's cancel raises KeyboardInterrupt in the task like this
        wait_for(started, 30, "the step's processes to start")
        os.kill(os.getpid(), signal.SIGALRM)

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        threading.Thread(target=interrupt_once_started, daemon=True).start()
        with open(tmp_path / "log", "w") as log, pytest.raises(KeyboardInterrupt):
            run_step(["sh", "-c", script], tmp_path, dict(os.environ), log)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert len(started()) == 2
    wait_for(lambda: all(gone(pid) for pid in started()), 30, f"processes {started()} to end")


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """`dvc repro` of the small project's first run with one torch thread, as each distributed run has: every
    stage after training is a function of the fold models (tests/test_e2e.py), so equal weights and an equal
    lock up to them mean an equal submission."""
    env = dict(VENV_ENV, OMP_NUM_THREADS="1")
    root = make_project(tmp_path_factory.mktemp("serial") / "project", SMALL, env)
    repro(root, env, TRAINED[0])
    return root


@pytest.fixture(scope="module")
def distributed(serial, tmp_path_factory):
    """The small project distributed over a local Ray with two logical GPUs, two runs at a time, in a fresh
    clone: the serial run's dvc.lock committed, none of its outputs in the cache."""
    root = make_project(tmp_path_factory.mktemp("distributed") / "project", SMALL, VENV_ENV)
    shutil.copy(serial / "dvc.lock", root / "dvc.lock")
    options = ["--address", "local", "--cpus", "2", "--gpus", "2", "--gpus-per-run", "1"]
    done = distribute(root, VENV_ENV, UP_TO, *options)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return root, VENV_ENV, done.stdout


@pytest.mark.slow
def test_the_head_restores_every_trained_stage_from_the_run_cache_and_trains_nothing(distributed):
    root, env, output = distributed
    head = output.split("$ dvc repro submission", 1)[1]
    assert all(f"Stage '{stage}' is cached - skipping run" in head for stage in TRAINED)
    assert not {stage for stage in stages_run(output) if stage.startswith("train@")}
    assert "Running stage 'oof@resnet10t'" in head and "Running stage 'submission'" in head
    up_to_date = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--dry", UP_TO], cwd=root, env=env, capture_output=True, text=True
    )
    assert stages_run(up_to_date.stdout) == ALWAYS_RUN, up_to_date.stdout


@pytest.mark.slow
def test_the_distributed_lock_and_weights_equal_the_serial_runs(distributed, serial):
    root, _, _ = distributed
    ours, theirs = lock_stages(root), lock_stages(serial)
    assert set(TRAINED) | {UP_TO} <= set(ours) and set(theirs) <= set(ours)
    for name in theirs:
        assert without_model_hashes(ours[name]) == without_model_hashes(theirs[name]), name
    run = Path("models") / TRAINED[0].split("@")[1].replace("-", "/fold")
    weights, expected = load_file(root / run / "model.safetensors"), load_file(serial / run / "model.safetensors")
    assert weights.keys() == expected.keys() and all((weights[name] == expected[name]).all() for name in expected)
    assert (root / run / "oof_plain.csv").read_bytes() == (serial / run / "oof_plain.csv").read_bytes()


@pytest.mark.slow
def test_runs_at_the_same_time_hold_different_gpus(distributed):
    root, _, output = distributed
    runs = [run for run in json.loads((root / ".dvc/tmp/distribute/distribute.json").read_text())]
    trained = [run for run in runs if run["name"].startswith("train@")]
    assert sorted(run["name"] for run in trained) == sorted(TRAINED)
    assert all(len(run["gpus"]) == 1 and run["returncode"] == 0 for run in trained)
    overlapping = [
        (a, b)
        for i, a in enumerate(trained)
        for b in trained[i + 1 :]
        if a["started"] < b["started"] + b["seconds"] and b["started"] < a["started"] + a["seconds"]
    ]
    assert overlapping, "two runs at a time were asked for"
    assert all(set(a["gpus"]).isdisjoint(b["gpus"]) for a, b in overlapping)
    for run in trained:  # what the stage's processes were given
        assert f"CUDA_VISIBLE_DEVICES={run['gpus'][0]}," in Path(run["log"]).read_text()


# A stage whose command fails while the marker file exists: what a crash or an out-of-memory run looks like.
INJECTED_FAILURE = """
import os, sys
if os.environ.get("DVC_STAGE") == {stage!r} and os.path.exists({marker!r}):
    print("injected failure of", os.environ["DVC_STAGE"], file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Two Ray nodes on this machine, one CPU and one GPU each, whose runs fail train@resnet10t-1 on demand."""
    marker = tmp_path / "fail-now"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECTED_FAILURE.format(stage="train@resnet10t-1", marker=str(marker)))
    monkeypatch.setenv("PYTHONPATH", str(inject))  # the nodes' processes, and so every run, import it
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    nodes.add_node(num_cpus=1, num_gpus=1)
    nodes.wait_for_nodes()
    monkeypatch.delenv("PYTHONPATH")
    yield nodes.address, marker
    nodes.shutdown()


@pytest.mark.slow
def test_a_failed_run_is_named_kept_out_of_the_lock_and_repaired_by_the_next_distribute(cluster, tmp_path):
    address, marker = cluster
    params = small_params({"resnet10t": {}})
    params["train"] = {**params["train"], "epochs": 1}
    space = {**params["tune"]["space"], "batch_size": {"choices": [16, 32]}}  # a fold here has ~107 images
    params["tune"] = {**params["tune"], "enabled": True, "n_trials": 2, "epochs": 1, "space": space}
    env = VENV_ENV
    root = make_project(tmp_path / "project", params, env)
    remote = tmp_path / "remote"  # no shared cache: the runs pull their inputs and push what they made
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)], cwd=root, check=True)
    options = ["--address", address, "--remote", "store", "--trial-workers", "2", "--gpus-per-run", "1"]

    # Ctrl-C on the head while runs train: they are cancelled, their processes end, the head says so.
    trained = ["train@resnet10t-0", "train@resnet10t-1"]  # the targets: what follows training is test 1's
    command = [sys.executable, "-m", "pipeline", "distribute", *trained, *options]
    with open(tmp_path / "head.out", "w") as out, open(tmp_path / "head.err", "w") as err:
        head = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=err, preexec_fn=ctrl_c_reaches_child)
        logs = (root / ".dvc" / "tmp" / "distribute").glob
        wait_for(
            lambda: any("Running stage 'train@" in log.read_text() for log in logs("train_*.log")), 300, "training"
        )
        head.send_signal(signal.SIGINT)
        assert head.wait(120) == 130
    assert "distribute: interrupted; the runs were cancelled" in (tmp_path / "head.err").read_text()
    wait_for(lambda: not running_training(), 60, "the cancelled runs' training processes to end")

    marker.touch()
    failed = distribute(root, env, *trained, *options)
    assert failed.returncode == 1, failed.stdout
    assert "1 of 2 stage(s) failed on the cluster: train@resnet10t-1 (log " in failed.stderr
    log = Path(failed.stderr.split("train@resnet10t-1 (log ", 1)[1].split(")", 1)[0])
    assert "injected failure of train@resnet10t-1" in log.read_text()
    kept = set(lock_stages(root))
    assert {"tune@resnet10t", "train@resnet10t-0"} <= kept and "train@resnet10t-1" not in kept

    # The study's trials ran in the tuning workers' Ray tasks, and the stage found it full (or topped it up).
    summary = json.loads((root / "tuning" / "resnet10t.json").read_text())
    journal = optuna.storages.journal.JournalFileBackend(summary["storage"])
    study = optuna.load_study(study_name=summary["study"], storage=optuna.storages.JournalStorage(journal))
    finished = [trial for trial in study.trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 2 and len({trial.user_attrs["worker"] for trial in study.trials}) >= 2

    # No run-cache entry was left by the failed run: the head's guard refuses to train it here.
    guarded = dict(env, PIPELINE_RESTORE_ONLY="train@*")
    here = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "train@resnet10t-1"],
        cwd=root,
        env=guarded,
        capture_output=True,
        text=True,
    )
    assert here.returncode != 0 and "train@resnet10t-1 was to be restored from DVC's run-cache" in here.stderr

    marker.unlink()
    repaired = distribute(root, env, *trained, *options)
    assert repaired.returncode == 0, f"{repaired.stdout[-4000:]}\n{repaired.stderr[-4000:]}"
    assert "train@*: 1 stale stage(s)" in repaired.stdout and "tune@*" not in repaired.stdout
    assert "Stage 'train@resnet10t-1' is cached - skipping run" in repaired.stdout
    assert not {stage for stage in stages_run(repaired.stdout) if stage.startswith(("train@", "tune@"))}
    up_to_date = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--dry", *trained], cwd=root, env=env, capture_output=True, text=True
    )
    assert stages_run(up_to_date.stdout) == ALWAYS_RUN, up_to_date.stdout
