"""Wall time of the default run (`make run`'s `dvc repro`) serially and with `distribute` on a local Ray.

    python benchmarks/distribute.py [--workers 2] [--out benchmarks/results/distribute]

Each run starts in a fresh clone of this repository's HEAD (no outputs, an empty DVC cache), one after the
other, never at the same time. Prints and writes (.md, .json) the wall times, the stages each run ran,
and the OOF accuracies, which differ only as far as the runs' torch thread counts differ (a serial run
uses every core, a distributed one `--cpus-per-run`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def clone(to: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(PROJECT), str(to)], check=True)
    return to


def timed(command: list[str], cwd: Path, log: Path) -> float:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}; see {log}")
    return seconds


def summary(root: Path, log: Path, seconds: float) -> dict:
    text = log.read_text()
    metrics = json.loads((root / "metrics" / "ensemble.json").read_text())
    return {
        "seconds": round(seconds, 1),
        "stages_run_here": sorted(set(re.findall(r"Running stage '([^']+)'", text))),
        "stages_restored": sorted(set(re.findall(r"Stage '([^']+)' is cached - skipping run", text))),
        "ensemble_oof_accuracy": round(metrics["accuracy"], 4),
    }


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    return names[0].strip() if names else platform.machine()


def measure(tmp: Path, workers: int) -> dict:
    """Both runs, one after the other, each in its own fresh clone under `tmp`."""
    serial = clone(tmp / "serial")
    seconds = timed([sys.executable, "-m", "dvc", "repro"], serial, tmp / "serial.log")
    print(f"serial dvc repro: {seconds / 60:.1f} min", flush=True)
    results = {"serial": summary(serial, tmp / "serial.log", seconds)}
    spread = clone(tmp / "distributed")
    command = [sys.executable, "-m", "pipeline", "distribute", "--address", "local", "--cpus", str(workers)]
    seconds = timed(command, spread, tmp / "distributed.log")
    print(f"distribute, {workers} workers: {seconds / 60:.1f} min", flush=True)
    results["distributed"] = summary(spread, tmp / "distributed.log", seconds)
    runs = json.loads((spread / ".dvc/tmp/distribute/distribute.json").read_text())
    results["distributed"]["runs"] = [{k: run[k] for k in ("name", "seconds", "returncode")} for run in runs]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs, one run each")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "distribute")
    args = parser.parse_args()
    results = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "workers": args.workers}
    tmp = Path(tempfile.mkdtemp(prefix="distribute-benchmark-"))  # kept when a run fails, for its log
    results.update(measure(tmp, args.workers))
    shutil.rmtree(tmp)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# The default run, serially and on a local Ray",
        "",
        f"`python benchmarks/distribute.py --workers {args.workers}` on {results['machine']}, nothing else running.",
        "",
        "| run | wall time | stages run on the head | restored from the run-cache | ensemble OOF |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("serial", "`dvc repro`"), ("distributed", f"`distribute`, {args.workers} workers")):
        run = results[name]
        lines.append(
            f"| {label} | {run['seconds'] / 60:.1f} min | {len(run['stages_run_here'])} | "
            f"{len(run['stages_restored'])} | {run['ensemble_oof_accuracy']:.4f} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
