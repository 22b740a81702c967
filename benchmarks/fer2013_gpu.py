"""FER-2013 with a preset on a GPU machine that has no network and no DVC: packed here, run there.

    python benchmarks/fer2013_gpu.py pack                 # here: .device/ (about 60 MB) for the GPU machine
    python benchmarks/fer2013_gpu.py run --out results    # there: every stage, the fold runs at once

`pack` writes into --pack (default .device/, git-ignored):
- competition.tar.xz: the competition's own files (the JPEGs as downloaded, re-packed: 51 MB where the zip
  is 71 MB), so `prepare` decodes exactly the pixels it decodes here;
- site.tar.xz: the Python packages the stages import that such a machine lacks (albumentations and
  optuna with their requirements, at this environment's versions, built for --python);
- params.yaml: params.yaml with the preset and any -S overrides applied, data.source pointing at the
  unpacked competition;
- stages.json: every stage of dvc.yaml in DVC's own order, with its command and the stages it needs,
  as DVC resolves them with those params.

`run` unpacks, then runs each stage's command as `dvc repro` would, except that a stage starts as soon
as the stages it needs are done, up to --parallel at once: the K × B fold runs share the GPU, which one
48-pixel net leaves mostly idle. It samples `nvidia-smi` meanwhile and writes to --out, after every stage:
results.json and results.md (wall time per stage, GPU utilisation while training, each run's epochs
and images/s, OOF per member and blended, the expected leaderboard figure), the ensemble's submission as soon
as it exists, gpu.csv, and at the end logs.tar.gz (each stage's log, metrics/, report/).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the stages import beyond what a GPU machine's image holds (torch, timm, numpy, pandas,
# scikit-learn, scipy, opencv, onnx, onnxruntime, safetensors, pyyaml, tqdm, markupsafe do travel there).
MISSING_THERE = (
    "albumentations",
    "albucore",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "simsimd",
    "stringzilla",
    "optuna",
    "sqlalchemy",
    "alembic",
    "colorlog",
    "mako",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
SOURCE_THERE = "data/fer2013"  # where `run` unpacks the competition, relative to the repository
SITE_THERE = Path(tempfile.gettempdir()) / "fer2013-gpu-site"  # where `run` unpacks the packages


def pack(args: argparse.Namespace) -> None:
    args.pack.mkdir(parents=True, exist_ok=True)
    pack_competition(args.source, args.pack / "competition.tar.xz")
    if args.site:
        pack_site(args.pack / "site.tar.xz", args.python)
    else:
        (args.pack / "site.tar.xz").unlink(missing_ok=True)
    params = device_params(args.preset, args.set)
    (args.pack / "params.yaml").write_text(params)
    stages = stage_order(params)
    (args.pack / "stages.json").write_text(json.dumps(stages, indent=1))
    size = sum(path.stat().st_size for path in args.pack.iterdir() if path.is_file())
    print(f"pack: {len(stages)} stages, {size / 2**20:.1f} MiB in {args.pack}")


def pack_competition(source: Path, target: Path) -> None:
    """The competition's files (a .zip or a folder) in one tar.xz; xz stores the JPEG headers they share once."""
    identity = {"source": str(source.resolve()), "size": source.stat().st_size, "mtime": source.stat().st_mtime}
    if built_from(target, identity):
        return
    with tarfile.open(target, "w:xz", preset=9 | lzma.PRESET_EXTREME) as packed:
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                packed.add(path, arcname=str(path.relative_to(source)))
        else:
            with zipfile.ZipFile(source) as archive:
                for member in (m for m in archive.infolist() if not m.is_dir()):
                    info = tarfile.TarInfo(member.filename)
                    info.size = member.file_size
                    packed.addfile(info, io.BytesIO(archive.read(member)))
    recipe_of(target).write_text(json.dumps(identity))


def pack_site(target: Path, python: str) -> None:
    """The packages in MISSING_THERE, at this environment's versions, installed for `python` and tarred."""
    wanted = [f"{name}=={importlib.metadata.version(name)}" for name in MISSING_THERE]
    if built_from(target, [python, wanted]):
        return
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--only-binary=:all:",
             "--python-version", python, "--implementation", "cp", *platforms, "--target", str(site), *wanted],
            check=True,
        )  # fmt: skip
        with tarfile.open(target, "w:xz", preset=9) as packed:
            packed.add(site, arcname="site")
    recipe_of(target).write_text(json.dumps([python, wanted]))


def recipe_of(target: Path) -> Path:
    """Where what `target` was built from is recorded, so that a second `pack` skips what has not changed."""
    return target.with_name(target.name + ".recipe.json")


def built_from(target: Path, recipe: object) -> bool:
    recorded = recipe_of(target)
    return target.exists() and recorded.exists() and json.loads(recorded.read_text()) == recipe


def device_params(preset: Path, sets: list[str]) -> str:
    """params.yaml with `preset` and the `key=value` overrides applied, reading the competition from SOURCE_THERE."""
    import yaml

    from pipeline.commands.preset import apply_preset
    from pipeline.config import config_from_dict

    with tempfile.TemporaryDirectory() as scratch:
        params = Path(scratch) / "params.yaml"
        shutil.copy(ROOT / "params.yaml", params)
        apply_preset(preset, params)
        document = yaml.safe_load(params.read_text())
    for assignment in [f"data.source={SOURCE_THERE}", *sets]:
        key, _, value = assignment.partition("=")
        *path, last = key.split(".")
        section = document
        for name in path:
            section = section.setdefault(name, {})
        section[last] = yaml.safe_load(value)
    config_from_dict(document, where="the device's params")  # refuse here what the stages would refuse there
    return yaml.safe_dump(document, sort_keys=False)


def stage_order(params: str) -> list[dict]:
    """Every stage as DVC orders and resolves it with `params`: name, command, the stages it needs."""
    import networkx as nx
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch)
        shutil.copy(ROOT / "dvc.yaml", workspace / "dvc.yaml")
        (workspace / ".dvc").mkdir()
        (workspace / ".dvc" / "config").write_text("")
        (workspace / "params.yaml").write_text(params)
        subprocess.run(["git", "init", "-q"], cwd=workspace, check=True)
        graph = Repo(str(workspace)).index.graph
        return [
            {"name": stage.name, "cmd": stage.cmd, "needs": sorted(d.name for d in graph.successors(stage))}
            for stage in reversed(list(nx.topological_sort(graph)))
        ]


class Sampler:
    """`nvidia-smi` every half second into a CSV, when the machine has one."""

    def __init__(self, path: Path):
        self.path, self.process = path, None
        if shutil.which("nvidia-smi"):
            query = "--query-gpu=timestamp,utilization.gpu,memory.used,power.draw"
            self.process = subprocess.Popen(
                ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "500"], stdout=path.open("w")
            )

    def samples(self, since: float, until: float) -> list[float]:
        """GPU utilisation (%) of the samples taken between two time.time() stamps."""
        from datetime import datetime

        rows = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            stamp, utilisation, *_ = [field.strip() for field in line.split(",")]
            try:
                seconds = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            if since <= seconds <= until:
                rows.append(float(utilisation))
        return rows

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()


def run(args: argparse.Namespace) -> None:
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.pack / "site.tar.xz").exists():
        with tarfile.open(args.pack / "site.tar.xz") as packed:
            packed.extractall(SITE_THERE, filter="data")
    sys.path.insert(0, str(SITE_THERE / "site"))  # for the versions recorded below
    with tarfile.open(args.pack / "competition.tar.xz") as packed:
        packed.extractall(ROOT / SOURCE_THERE, filter="data")
    shutil.copy(args.pack / "params.yaml", ROOT / "params.yaml")
    stages = json.loads((args.pack / "stages.json").read_text())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SITE_THERE / "site"), str(ROOT)]),
        "PYTHONUNBUFFERED": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",  # no network there: its version check only waits for a DNS failure
    }
    results = {
        "t0": started,
        "unpack_seconds": time.time() - started,
        "parallel": args.parallel,
        "machine": machine(),
        "stages": {},
    }
    sampler = Sampler(args.out / "gpu.csv")
    logs = ROOT / "logs"
    logs.mkdir(exist_ok=True)
    try:
        run_stages(stages, env, logs, args, results, sampler, started)
    finally:
        sampler.stop()
        results["wall_seconds"] = time.time() - started
        write_results(results, args.out, sampler)
        with tarfile.open(args.out / "logs.tar.gz", "w:gz") as packed:
            for name in ("logs", "metrics", "report", "submissions", "ensemble/weights.json", "params.yaml"):
                if (ROOT / name).exists():
                    packed.add(ROOT / name, arcname=name)
            for history in sorted((ROOT / "models").glob("*/fold*/*.csv")) + sorted(
                (ROOT / "models").glob("*/fold*/run.json")
            ):
                packed.add(history, arcname=str(history.relative_to(ROOT)))


def machine() -> dict:
    """The GPU, CPU cores and package versions the figures were measured with."""
    versions = {}
    for name in ("torch", "timm", "numpy", "pandas", "scikit-learn", "onnxruntime", "albumentations", "optuna"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpu = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    return {"gpu": gpu, "cpu_cores": os.cpu_count(), "python": sys.version.split()[0], "versions": versions}


def run_stages(
    stages: list[dict], env: dict, logs: Path, args: argparse.Namespace, results: dict, sampler: Sampler, started: float
) -> None:
    """Each stage's command once the stages it needs are done, at most `args.parallel` at once, until the deadline."""
    done: set[str] = set()
    failed: set[str] = set()
    waiting = list(stages)
    running: dict[Future, tuple[str, subprocess.Popen]] = {}
    with ThreadPoolExecutor(args.parallel) as pool:
        while waiting or running:
            for stage in [s for s in waiting if set(s["needs"]) <= done][: args.parallel - len(running)]:
                waiting.remove(stage)
                command = shlex.split(stage["cmd"])
                if command[0] == "python":
                    command[0] = sys.executable
                log = (logs / f"{stage['name'].replace('@', '_')}.log").open("w")
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=stage_env(stage["name"], env, args.parallel),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                results["stages"][stage["name"]] = {"start": time.time() - started}
                running[pool.submit(process.wait)] = (stage["name"], process)
            if not running:
                break  # what is left waits on a failed stage
            left = args.deadline - (time.time() - started)
            finished, _ = wait(running, timeout=max(left, 1), return_when=FIRST_COMPLETED)
            if not finished and time.time() - started >= args.deadline:
                for name, process in running.values():
                    process.kill()
                    results["stages"][name]["killed_at_deadline"] = True
                wait(running)
                failed.update(name for name, _ in running.values())
                break
            for future in finished:
                name, process = running.pop(future)
                record = results["stages"][name]
                record.update(end=time.time() - started, exit_code=process.returncode)
                record["seconds"] = record["end"] - record["start"]
                (done if process.returncode == 0 else failed).add(name)
                print(
                    f"{record['end']:6.0f}s  {name}: exit {process.returncode} after {record['seconds']:.0f}s",
                    flush=True,
                )
                if name == "submission":
                    shutil.copy(ROOT / "submissions" / "ensemble.csv", args.out / "ensemble.csv")
                write_results(results, args.out, sampler)
    results["failed"] = sorted(failed)
    results["not_run"] = [stage["name"] for stage in waiting]


def stage_env(name: str, env: dict, parallel: int) -> dict:
    """A fold run shares the CPU's cores with the other runs at once; every other stage may use them all."""
    if not name.startswith(("train@", "tune@")):
        return env
    return {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}


def write_results(results: dict, out: Path, sampler: Sampler) -> None:
    """results.json and results.md from what the stages have written so far."""
    results.update(training_figures(results, sampler))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))


def training_figures(results: dict, sampler: Sampler) -> dict:
    import pandas as pd

    train = [r for name, r in results["stages"].items() if name.startswith("train@") and "end" in r]
    figures: dict = {"runs": {}, "members": {}}
    if train:
        since, until = min(r["start"] for r in train), max(r["end"] for r in train)
        figures["train_window_seconds"] = until - since
        utilisation = sampler.samples(results["t0"] + since, results["t0"] + until)  # nvidia-smi stamps wall-clock
        if utilisation:
            figures["gpu_utilisation_while_training"] = {
                "mean": sum(utilisation) / len(utilisation),
                "median": sorted(utilisation)[len(utilisation) // 2],
                "samples": len(utilisation),
            }
    for history in sorted((ROOT / "models").glob("*/fold*/history.csv")):
        frame = pd.read_csv(history)
        rate = frame["train_images_per_s"]
        figures["runs"][f"{history.parent.parent.name}/{history.parent.name}"] = {
            "epochs": len(frame),
            "median_images_per_s": float(rate.median()),
            "train_seconds": float(frame["seconds"].sum()),
        }
    for path in sorted((ROOT / "metrics").glob("*.json")):
        metrics = json.loads(path.read_text())
        if "accuracy" in metrics:
            figures["members"][path.stem] = {k: metrics[k] for k in ("accuracy", "accuracy_no_tta") if k in metrics}
    report = ROOT / "metrics" / "report.json"
    if report.exists():
        figures["expected_leaderboard"] = json.loads(report.read_text()).get("expected_leaderboard")
    return figures


def markdown(results: dict) -> str:
    lines = [f"Wall time: {results.get('wall_seconds', 0) / 60:.1f} min ({results['parallel']} stages at once).", ""]
    lines += ["| stage | start s | seconds | exit |", "|---|---|---|---|"]
    for name, r in results["stages"].items():
        lines.append(
            f"| {name} | {r['start']:.0f} | {r.get('seconds', float('nan')):.0f} | {r.get('exit_code', '–')} |"
        )
    if "gpu_utilisation_while_training" in results:
        u = results["gpu_utilisation_while_training"]
        lines += ["", f"GPU utilisation while training: mean {u['mean']:.0f}%, median {u['median']:.0f}%."]
    lines += ["", "| run | epochs | img/s (median) |", "|---|---|---|"]
    lines += [f"| {n} | {r['epochs']} | {r['median_images_per_s']:.0f} |" for n, r in results["runs"].items()]
    lines += ["", "| member | OOF | OOF without TTA |", "|---|---|---|"]
    for name, m in results["members"].items():
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m.get('accuracy_no_tta', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def probe_compile(args: argparse.Namespace) -> None:
    """One training process alone on the machine: each backbone's step eager and under torch.compile, in img/s
    on random batches of the run's shape, and the seconds compiling took (its first steps)."""
    import itertools

    sys.path.insert(0, str(SITE_THERE / "site"))  # the packages `run` unpacked
    import torch

    from pipeline.config import load_config
    from pipeline.training.augment import Normalizer
    from pipeline.training.models import model_on, pick_device
    from pipeline.training.speed import UNIFORM_PIXELS
    from pipeline.training.step import TrainStep, time_steps

    config, device = load_config(ROOT / "params.yaml"), pick_device()
    figures = {}
    for name in config.backbones:
        train = config.backbone(name)
        images = torch.randint(0, 256, (train.batch_size, 48, 48), dtype=torch.uint8)
        batches = itertools.repeat((images, torch.randint(0, 7, (train.batch_size,))))
        for compiled in (False, True):
            model = model_on(train, 1, 7, device)
            normalize = Normalizer(*UNIFORM_PIXELS, train.input_size, device, train.channels_last)
            step = TrainStep(torch.compile(model) if compiled else model, train, normalize, 7, steps_per_epoch=1000)
            started = time.perf_counter()
            time_steps(step, batches, warmup=3, timed=1)
            first = time.perf_counter() - started
            seconds, _ = time_steps(step, batches, warmup=5, timed=args.steps)
            figures[f"{name} {'compiled' if compiled else 'eager'}"] = {
                "images_per_s": train.batch_size / seconds,
                "first_steps_seconds": first,
            }
            print(name, "compiled" if compiled else "eager", figures[f"{name} {'compiled' if compiled else 'eager'}"])
            (args.out / "compile.json").write_text(json.dumps(figures, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="here: write the pack for the GPU machine")
    packing.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/fer2013.zip")
    packing.add_argument("--preset", type=Path, default=ROOT / "presets/fer2013-gpu.yaml")
    packing.add_argument("-S", "--set", action="append", default=[], help="key=value over the preset, as dvc exp -S")
    packing.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    packing.add_argument(
        "--no-site", dest="site", action="store_false", help="pack no packages: the machine has what the stages import"
    )
    packing.add_argument("--pack", type=Path, default=ROOT / ".device")
    running = verbs.add_parser("run", help="there: every stage, the fold runs at once")
    running.add_argument("--pack", type=Path, default=ROOT / ".device")
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--parallel", type=int, default=12, help="stages at once (the fold runs share the GPU)")
    running.add_argument("--deadline", type=float, default=560, help="seconds: stages still running then are killed")
    probing = verbs.add_parser("probe-compile", help="there, after run: eager against torch.compile, one process")
    probing.add_argument("--out", type=Path, required=True)
    probing.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    {"pack": pack, "run": run, "probe-compile": probe_compile}[args.verb](args)


if __name__ == "__main__":
    main()
