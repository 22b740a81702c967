"""One stage run by a worker: a scratch checkout of the snapshot, its inputs from the DVC cache, then
`dvc repro --single-item`, which stores the outputs in the cache and writes the run-cache entry the head
restores them from. Only names, exit codes and log paths go back to the head, never weights.

A tuning worker (`share_of` set) runs Optuna trials of the stage's study on the shared storage instead;
the stage's own job, started after them, finds the study full and writes its output.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipeline.__main__ import RESTORE_ONLY_ENV
from pipeline.cluster.snapshot import check_out
from pipeline.errors import PipelineError

NODE_ROOT = Path(tempfile.gettempdir()) / "pipeline-distribute"
STOP_GRACE_SECONDS = 10  # a cancelled stage's process group gets this long after SIGTERM before SIGKILL


@dataclass(frozen=True)
class Job:
    stage: str  # the DVC stage it runs, or whose study it works on
    repo: str  # the head's repository: a path every node can read, or a git URL
    commit: str  # the snapshot to check out
    upstream: tuple[str, ...]  # stages whose outputs the stage reads
    logs: str  # folder for the job's log (a node-local one when this one cannot be written)
    cache: str | None = None  # a DVC cache folder shared by the head and every worker
    remote: str | None = None  # else a DVC remote: inputs pulled from it, outputs and run-cache pushed to it
    env: dict[str, str] = field(default_factory=dict)
    share_of: int = 0  # a tuning worker, one of this many: runs its share of the study's missing trials
    worker: int = 0

    @property
    def name(self) -> str:
        return self.stage if not self.share_of else f"{self.stage}#trials{self.worker}"


@dataclass(frozen=True)
class Outcome:
    name: str
    returncode: int
    log: str
    node: str
    gpus: tuple[str, ...]
    started: float
    seconds: float


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def log_path(job: Job) -> Path:
    for folder in (Path(job.logs), NODE_ROOT / "logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder / f"{file_name(job.name)}.log"
        except OSError:
            continue
    raise PipelineError(f"no folder for the log of {job.name}: {job.logs} and {NODE_ROOT} are not writable")


def commands(job: Job) -> list[list[str]]:
    dvc = [sys.executable, "-m", "dvc"]
    remote = ["-r", job.remote] if job.remote else []
    steps = []
    if job.cache:
        steps.append([*dvc, "cache", "dir", "--local", job.cache])
    if job.upstream:
        steps.append([*dvc, "pull", *remote, *job.upstream] if job.remote else [*dvc, "checkout", *job.upstream])
    if job.share_of:
        backbone = job.stage.split("@", 1)[1]
        steps.append(
            [sys.executable, "-m", "pipeline", "tune", "--backbone", backbone, "--share-of", str(job.share_of)]
        )
        return steps
    steps.append([*dvc, "repro", "--single-item", job.stage])
    if job.remote:
        steps.append([*dvc, "push", *remote, "--run-cache", job.stage])
    return steps


def this_python_first(env: dict[str, str]) -> dict[str, str]:
    """`env` with this interpreter's folder first on PATH: the `python` of dvc.yaml's commands is this one."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def environment(job: Job, gpus: tuple[str, ...]) -> dict[str, str]:
    env = this_python_first({**os.environ, **job.env})
    env.pop(RESTORE_ONLY_ENV, None)  # the head's guard is not the worker's
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def run_step(command: list[str], cwd: Path, env: dict[str, str], log: IO[str]) -> int:
    """`command` in its own process group, so that a cancelled job stops it and everything it started."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        raise


def run(job: Job, node: str, gpus: tuple[str, ...]) -> Outcome:
    """Run `job` here; its outputs reach the head through the DVC cache or remote, its output through its log."""
    started = time.time()
    log_file = log_path(job)
    scratch = NODE_ROOT / job.commit[:12] / file_name(job.name)
    returncode = 1
    env = environment(job, gpus)
    devices = env.get("CUDA_VISIBLE_DEVICES", "unset")
    with open(log_file, "w") as log:
        log.write(f"{job.name} on {node}, CUDA_VISIBLE_DEVICES={devices}, commit {job.commit[:12]}, in {scratch}\n")
        try:
            check_out(job.repo, job.commit, scratch)
            # Resumable state and measured speeds outlive the scratch: a retried run resumes after its last epoch.
            (NODE_ROOT / "checkpoints").mkdir(parents=True, exist_ok=True)
            (scratch / "checkpoints").symlink_to(NODE_ROOT / "checkpoints")
            for command in commands(job):
                returncode = run_step(command, scratch, env, log)
                if returncode != 0:
                    break
        except PipelineError as error:
            log.write(f"error: {error}\n")
        finally:
            log.write(f"exit {returncode} after {time.time() - started:.0f} s\n")
            shutil.rmtree(scratch, ignore_errors=True)
    return Outcome(job.name, returncode, str(log_file), node, gpus, started, time.time() - started)
