"""`dvc repro` with the tuning and training runs spread over a Ray cluster (docs/distribute.md).

1. The stages upstream of tune@ and train@ (prepare, folds, ...) run here, as `dvc repro` runs them.
2. The stale tune@ stages, then the stale train@ stages, run as Ray tasks, each in a scratch checkout
   of a snapshot of this workspace, with its outputs and run-cache entry stored in the DVC cache that
   every node shares (--cache) or pushed to a DVC remote (--remote). Only names, exit codes and log paths
   travel back, never weights.
3. Here, `dvc repro [TARGETS]` restores every tuned and trained stage from the run-cache ("Stage ... is
   cached - skipping run") and runs the rest itself; DVC writes dvc.lock. A stage the run-cache lacks
   is an error here, never hours of training on this machine.

A failed run is named with its log; the runs that finished are kept, so running `distribute` again runs
only what is missing. Ctrl-C cancels the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pipeline.__main__ import INTERRUPTED, RESTORE_ONLY_ENV
from pipeline.cluster import dvc_graph, snapshot
from pipeline.cluster.task import Job, Outcome, run, this_python_first
from pipeline.config import STORAGE_ENV, TuneConfig, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.files import write_json
from pipeline.runtime.frames import HelpFormatter, in_range

PHASES = ("tune@*", "train@*")  # in this order: training reads tuning's output
GIB = 1024**3
FRAMEWORK_BYTES = GIB  # a run's interpreter, torch and model, besides twice the data it reads
LOG_TAIL_LINES = 15
CANCEL_WAIT_SECONDS = 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline distribute", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("targets", nargs="*", help="stages to reproduce, as for `dvc repro` (default: all)")
    parser.add_argument(
        "--address",
        help="Ray cluster to join, `local`: a new one here (default: $RAY_ADDRESS, else a running local one, else new)",
    )
    parser.add_argument("--cpus", type=in_range(int, 1), help="CPUs of a new local Ray (default: this machine's)")
    parser.add_argument("--gpus", type=in_range(int, 0), help="GPUs of a new local Ray (default: this machine's)")
    parser.add_argument("--cpus-per-run", type=in_range(float, 0.01), default=1.0, help="CPUs each run reserves")
    parser.add_argument(
        "--gpus-per-run",
        type=in_range(float, 0.0, 64.0),
        help="GPUs each run reserves; 0.25 puts four runs on one GPU (default: 1 on a cluster with GPUs, else 0)",
    )
    parser.add_argument(
        "--memory-per-run",
        type=in_range(float, 0.1),
        help="GiB each run reserves, which caps how many share a node "
        "(default: twice the size of what the run reads, plus 1)",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--cache", type=Path, help="DVC cache folder every node reads and writes (default: this project's)"
    )
    store.add_argument(
        "--remote",
        nargs="?",
        const="",
        help="the default DVC remote, which the runs pull their inputs from and push outputs and run-cache to",
    )
    parser.add_argument(
        "--repo",
        help="where workers fetch the workspace's snapshot: a path all nodes read, or a git URL (default: here)",
    )
    parser.add_argument(
        "--logs", type=Path, default=Path(".dvc/tmp/distribute"), help="folder for each run's log and distribute.json"
    )
    parser.add_argument(
        "--trial-workers",
        type=in_range(int, 1),
        default=1,
        help="Ray tasks running a tune@ stage's Optuna trials together (tune.enabled; a storage every node reaches)",
    )
    return parser.parse_args(argv)


def import_ray():
    try:
        import ray
    except ImportError as error:
        raise PipelineError("distribute needs Ray, an optional extra: pip install -r requirements-ray.txt") from error
    return ray


@dataclasses.dataclass(frozen=True)
class Head:
    """This machine: DVC runs here with a guard on the stages the cluster runs, which must come from the
    run-cache (pulled from the remote first, when the runs use one)."""

    root: Path
    remote: str | None
    phases: tuple[str, ...]

    def env(self) -> dict[str, str]:
        return {**this_python_first(dict(os.environ)), RESTORE_ONLY_ENV: ",".join(self.phases)}

    def dvc(self, *args: str) -> None:
        """A DVC command here, its output shown as it comes."""
        print(f"$ dvc {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=self.root, env=self.env())
        if done.returncode != 0:
            raise PipelineError(f"`dvc {' '.join(args)}` failed (exit {done.returncode}); its output is above")

    def repro(self, *targets: str, made: Iterable[str] = ()) -> None:
        """`dvc repro`, the stages `made` on the cluster restored from the run-cache."""
        dvc_graph.forget_locks(self.root, list(made))
        if self.remote is None:
            self.dvc("repro", *targets)
            return
        self.dvc("fetch", "-r", self.remote, "--run-cache")
        self.dvc("repro", "--pull", *targets)


def cluster_phases(tune: TuneConfig) -> tuple[str, ...]:
    """The stage patterns the cluster runs, in order: tune@ only when tuning is on (else it writes a stub)."""
    return PHASES if tune.enabled else PHASES[1:]


def check_remote(root: Path, args: argparse.Namespace) -> None:
    """`dvc repro --pull` pulls from the default remote only, so the runs' remote must be that one."""
    default = dvc_graph.default_remote(root)
    if default is None:
        raise ConfigError("--remote: this project has no default DVC remote; add one: dvc remote add -d NAME URL")
    if args.remote and args.remote != default:
        raise ConfigError(
            f"--remote {args.remote}: the runs must use the default remote; run: dvc remote default {args.remote}"
        )
    args.remote = default


def connect(ray, args: argparse.Namespace, root: Path) -> None:
    address = args.address or os.environ.get("RAY_ADDRESS")
    # Workers import this package from the copy Ray ships them, so a node needs the requirements, not the project.
    runtime_env = {"py_modules": [str(root / "pipeline")]}
    starts_one = address in (None, "local")  # else it joins a cluster, whose resources are its nodes'
    options = {"num_cpus": args.cpus, "num_gpus": args.gpus} if starts_one else {}
    ray.init(address=address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False, **options)
    resources = ray.cluster_resources()
    print(
        f"Ray: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs",
        flush=True,
    )


def storage_env(root: Path, tune: TuneConfig) -> dict[str, str]:
    """The Optuna storage as every run must see it: a journal path made absolute."""
    if not tune.enabled:
        return {}
    url = tune.storage_url()
    return {STORAGE_ENV: url if "://" in url else str((root / url).resolve())}


def phase_jobs(root: Path, stale: list[str], base: Job, trial_workers: int) -> tuple[list[Job], list[Job]]:
    """(tuning workers, stage jobs) for the stale stages of one phase."""
    reads = dvc_graph.upstream(root, stale)
    stages = [dataclasses.replace(base, stage=name, upstream=tuple(reads[name])) for name in stale]
    if trial_workers == 1:
        return [], stages
    workers = [
        dataclasses.replace(job, share_of=trial_workers, worker=worker)
        for job in stages
        if job.stage.startswith("tune@")
        for worker in range(trial_workers)
    ]
    return workers, stages


def describe(outcome: Outcome) -> str:
    where = f"on {outcome.node}" + (f", GPU {','.join(outcome.gpus)}" if outcome.gpus else "")
    if outcome.returncode == 0:
        return f"{outcome.name}: done in {outcome.seconds:.0f} s {where}"
    tail = ""
    if Path(outcome.log).is_file():
        lines = Path(outcome.log).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        tail = "".join(f"\n    {line}" for line in lines)
    return f"{outcome.name}: FAILED (exit {outcome.returncode}) {where}; log {outcome.log}{tail}"


def run_jobs(ray, workers: list[Job], stages: list[Job], resources: dict) -> list[Outcome]:
    """Every job as a Ray task (a tune@ stage after its study's workers); outcomes as they finish."""

    @ray.remote(**resources)
    def remote_run(job: Job, *after: Outcome) -> Outcome:  # `after`: the runs this one waits for
        return run(job, ray.util.get_node_ip_address(), tuple(str(gpu) for gpu in ray.get_gpu_ids()))

    jobs = {}
    for job in workers:
        jobs[remote_run.remote(job)] = job
    for job in stages:
        before = [ref for ref, other in jobs.items() if other.stage == job.stage]
        jobs[remote_run.remote(job, *before)] = job
    outcomes, pending = [], list(jobs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            outcome = collect(ray, ready[0], jobs[ready[0]])
            print(describe(outcome), flush=True)
            outcomes.append(outcome)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # raises KeyboardInterrupt in the task, which stops its process group
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_SECONDS)
        raise
    return outcomes


def collect(ray, ref, job: Job) -> Outcome:
    """The task's outcome, or a failed one when the task itself died (its node lost, its worker killed)."""
    try:
        return ray.get(ref)
    except (ray.exceptions.RayError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Outcome(job.name, -1, f"{job.logs} (the task died: {reason})", "?", (), time.time(), 0.0)


def task_resources(args: argparse.Namespace, ray, root: Path, reads: Iterable[str]) -> dict:
    gpus = args.gpus_per_run
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    if args.memory_per_run is not None:
        memory = int(args.memory_per_run * GIB)
    else:
        memory = 2 * dvc_graph.output_bytes(root, list(reads)) + FRAMEWORK_BYTES
    # A run that dies with its node is started again elsewhere; one that fails on its own is reported.
    return {"num_cpus": args.cpus_per_run, "num_gpus": gpus, "memory": memory, "max_retries": 2}


def run_phase(
    ray, args: argparse.Namespace, head: Head, base: Job, stale: list[str], pattern: str, history: list[Outcome]
) -> list[str]:
    """The stale stages of one phase on the cluster; the names of those that finished. Every outcome is added
    to `history` and written to distribute.json. A failure stops `distribute` once the finished ones are in
    dvc.lock, so that the next run runs only the failed ones."""
    root = head.root
    reads = dvc_graph.ancestors(root, stale)
    if head.remote is not None:
        head.dvc("push", "-r", head.remote, *reads)
    commit = snapshot.snapshot(root)
    tuning_workers = args.trial_workers if PHASES[0] in head.phases else 1  # workers need tuning on
    outcomes: list[Outcome] = []
    try:
        workers, stages = phase_jobs(root, stale, dataclasses.replace(base, commit=commit), tuning_workers)
        print(f"{pattern}: {len(stages)} stale stage(s) to the cluster, snapshot {commit[:12]}", flush=True)
        outcomes = run_jobs(ray, workers, stages, task_resources(args, ray, root, reads))
    finally:
        snapshot.forget(root, commit)
        history += outcomes
        write_json([dataclasses.asdict(outcome) for outcome in history], Path(base.logs) / "distribute.json")
    done = [o.name for o in outcomes if o.returncode == 0 and o.name in stale]
    failed = [o for o in outcomes if o.returncode != 0 and o.name in stale]
    if failed:
        if done:
            head.repro(*done, made=done)
        raise PipelineError(
            f"{len(failed)} of {len(stale)} stage(s) failed on the cluster: "
            + "; ".join(f"{o.name} (log {o.log})" for o in failed)
            + "; fix the cause and run `python -m pipeline distribute` again: it runs only these"
        )
    return done


def distribute(args: argparse.Namespace, root: Path) -> int:
    if args.remote is not None:
        check_remote(root, args)
    tune = load_config(root / "params.yaml").tune
    head = Head(root, args.remote, cluster_phases(tune))
    names = dvc_graph.stage_names(root, args.targets)
    heavy = dvc_graph.matching(names, list(head.phases))
    before = [name for name in dvc_graph.ancestors(root, heavy) if name not in heavy]
    if before:
        head.dvc("repro", *before)
    if not dvc_graph.stale(root, heavy):  # nothing for a cluster: `dvc repro` here, guarded all the same
        head.repro(*args.targets)
        return 0
    ray = import_ray()
    connect(ray, args, root)
    logs = (root / args.logs).resolve()
    base = Job(
        stage="",
        repo=args.repo or str(root),
        commit="",
        upstream=(),
        logs=str(logs),
        cache=None if args.remote is not None else str((args.cache or dvc_graph.cache_dir(root)).resolve()),
        remote=args.remote,
        env=storage_env(root, tune),
    )
    made: list[str] = []
    history: list[Outcome] = []
    for pattern in head.phases:
        if made:  # the next phase's snapshot needs the last one's outputs in dvc.lock
            head.repro(*made, made=made)
        stale = dvc_graph.stale(root, dvc_graph.matching(heavy, [pattern]))
        made = run_phase(ray, args, head, base, stale, pattern, history) if stale else []
    head.repro(*args.targets, made=made)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"{root} has no dvc.yaml: run `python -m pipeline distribute` in the project's folder")
    try:
        return distribute(args, root)
    except KeyboardInterrupt:
        print("distribute: interrupted; the runs were cancelled; run it again to go on", file=sys.stderr)
        return INTERRUPTED
