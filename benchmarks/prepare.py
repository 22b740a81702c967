"""Images per second of the `prepare` stage, on all cores and on one, with its peak memory.

    python benchmarks/prepare.py                  # FER-2013 from ../shared (class folders and as a pixel table)
    python benchmarks/prepare.py --large 2000     # plus 2000 RGB 800×600 JPEGs resized to 224

Each row runs `python -m pipeline prepare` in a fresh process (limited to one core with
sched_setaffinity for the one-core rows), so start-up, listing, decoding and writing are all
counted. Peak memory is the child's maximum resident set, beside the size of the arrays it wrote:
decoding goes straight into memory-mapped files, so the set is never held in memory twice.
Results go to benchmarks/results/prepare.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.machine import available_cores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FER2013 = ROOT.parent / "shared" / "data" / "fer2013.zip"


def run_prepare(source: Path, data: dict, cores: int, work: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {**params["data"], **data, "source": str(source)}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    out = work / "prepared"
    pin = f"os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:{cores}]))\n" if cores else ""
    # The child reports its own peak and its decoding workers': a per-run figure, not this process's running maximum.
    code = (
        "import os, resource, sys\n" + pin + "from pipeline.__main__ import main\ncode = main(sys.argv[1:])\n"
        "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(f'PEAK_KB {peak}', file=sys.stderr)\nsys.exit(code)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "prepare",
            "--source",
            str(source),
            "--out",
            str(out),
            "--params",
            str(work / "params.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"prepare failed on {source}:\n{done.stderr}")
    peak_mb = int(done.stderr.rsplit("PEAK_KB ", 1)[1].split()[0]) / 1024
    meta = json.loads((out / "meta.json").read_text())
    images = meta["train_images"] + meta["test_images"]
    arrays_mb = sum((out / f).stat().st_size for f in ("train_images.npy", "test_images.npy")) / 2**20
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds),
        "peak_rss_mb": round(peak_mb),
        "arrays_mb": round(arrays_mb, 1),
        "layout": meta["layout"],
    }


def fastest(source: Path, data: dict, cores: int, work: Path, repeats: int) -> dict:
    return min((run_prepare(source, data, cores, work) for _ in range(repeats)), key=lambda row: row["seconds"])


def fer_pixel_table(prepared: Path, target: Path) -> None:
    """FER-2013 as its original fer2013.csv: emotion code, pixels, Usage (train rows, then the test rows)."""
    classes = json.loads((prepared / "classes.json").read_text())
    train = np.load(prepared / "train_images.npy")
    test = np.load(prepared / "test_images.npy")
    labels = pd.read_csv(prepared / "train.csv")["label"].map({c: i for i, c in enumerate(classes)})
    pixels = [" ".join(map(str, image.ravel())) for image in np.concatenate([train, test])]
    usage = ["Training"] * len(train) + ["PublicTest"] * len(test)
    pd.DataFrame({"emotion": list(labels) + [0] * len(test), "pixels": pixels, "Usage": usage}).to_csv(
        target, index=False
    )


def large_rgb(folder: Path, count: int, seed: int = 0) -> None:
    """`count` 800×600 photos-like JPEGs (smooth gradients with noise) in class folders, a tenth as test."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:600, 0:800]
    test_ids = []
    for i in range(count):
        base = (np.sin(x / rng.uniform(20, 80)) + np.cos(y / rng.uniform(20, 80))) * 60 + 128
        image = np.clip(base[..., None] + rng.normal(0, 12, (600, 800, 3)) + rng.uniform(-40, 40, 3), 0, 255).astype(
            np.uint8
        )
        if i % 10 == 0:
            path, _ = folder / "test" / f"{i}.jpg", test_ids.append(str(i))
        else:
            path = folder / "train" / f"class{i % 3}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
    pd.DataFrame({"id": test_ids, "label": "class0"}).to_csv(folder / "sample_submission.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=0, help="also time this many RGB 800×600 JPEGs resized to 224")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per row; the fastest is kept (other load only slows a run)"
    )
    args = parser.parse_args()
    cores = available_cores()
    rows = []

    def time_case(name: str, source: Path, data: dict) -> None:
        for use in sorted({cores, 1}, reverse=True):
            work = tmp / f"run{len(rows)}"
            work.mkdir()
            rows.append({"case": name, "cores": use, **fastest(source, data, use, work, args.repeats)})
            print(json.dumps(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if FER2013.exists():
            time_case("FER-2013 .zip, class folders, 48 px gray", FER2013, {})
            (tmp / "pixels").mkdir()
            fer_pixel_table(tmp / "run0" / "prepared", tmp / "pixels" / "fer2013.csv")
            time_case(
                "FER-2013 fer2013.csv, pixel table", tmp / "pixels", {"class_names": {i: f"c{i}" for i in range(7)}}
            )
        else:
            print(f"skipping FER-2013: {FER2013} not found")
        if args.large:
            large_rgb(tmp / "large", args.large)
            time_case(f"{args.large} RGB 800×600 JPEGs → 224 px", tmp / "large", {"image_size": 224, "channels": 3})
    header = "| case | layout | cores | images | seconds | images/s | peak RSS MB | arrays MB |"
    lines = [
        f"`python benchmarks/prepare.py{f' --large {args.large}' if args.large else ''}` (fastest of {args.repeats}) "
        "on "
        f"{platform.processor() or platform.machine()}, {cores} cores:",
        "",
        header,
        "|" + "---|" * 8,
    ]
    lines += [
        f"| {r['case']} | {r['layout']} | {r['cores']} | {r['images']} | {r['seconds']} | {r['images_per_s']} | "
        f"{r['peak_rss_mb']} | {r['arrays_mb']} |"
        for r in rows
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prepare.md").write_text(report + "\n")
    (RESULTS / "prepare.json").write_text(json.dumps({"rows": rows, "cores": cores}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
