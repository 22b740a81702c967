"""Memory and speed of a fold's training when its images are read from the memory-mapped train_images.npy batch
by batch (`mapped`, the pipeline's way) against a copy of the fold held in memory (`copy`).

    python benchmarks/memory.py                                  # a generated 20,000-image 224 px RGB set
    python benchmarks/memory.py --data data/prepared --model face_vgg --input-size 0   # a prepared competition

Each variant trains fold 0 of a 3-fold split for `--epochs` in a process of its own, and reports its peak
anonymous memory (RssAnon: what the process itself holds, the copy included; pages of the mapped file are
the page cache's, reclaimable), its peak resident set (VmHWM, mapped pages included) and the training img/s.
`--input-size` resizes batches for the model (64 by default: the model's cost kept small, so the data path
shows); 0 trains at the images' own size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.data import Prepared, Split, load_prepared  # noqa: E402
from pipeline.files import write_json, write_text  # noqa: E402
from pipeline.training import fold_run  # noqa: E402

VARIANTS = ("copy", "mapped")
CLASSES = 7


def generated(folder: Path, images: int, size: int, channels: int) -> Path:
    """`images` random uint8 images of `size` px (written once, in chunks) and their labels."""
    path = folder / f"images-{images}-{size}-{channels}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shape = (images, size, size, channels) if channels > 1 else (images, size, size)
        array = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=shape)
        rng = np.random.default_rng(0)
        for start in range(0, images, 1000):
            array[start : start + 1000] = rng.integers(0, 256, (min(1000, images - start), *shape[1:]), np.uint8)
        array.flush()
        del array
        path.with_suffix(".tmp.npy").rename(path)
    return path


def dataset(args) -> Prepared:
    if args.data:
        return load_prepared(args.data)
    images = np.load(generated(args.work, args.images, args.size, args.channels), mmap_mode="r")
    count = len(images)
    return Prepared(
        train_images=images,
        train_ids=np.array([str(i) for i in range(count)]),
        train_labels=np.arange(count) % CLASSES,
        train_files=np.array([f"{i}.png" for i in range(count)]),
        test_images=images[:0],
        test_ids=np.array([], dtype=str),
        classes=[str(c) for c in range(CLASSES)],
        submission_labels=[str(c) for c in range(CLASSES)],
        submission_form="label",
        pixel_mean=0.5,
        pixel_std=0.29,
        fingerprint="generated",
    )


def copied_split(data: Prepared, index: np.ndarray) -> Split:
    """The fold as the pipeline held it before: a copy of its images."""
    targets = None if data.train_targets is None else data.train_targets[index]
    return Split(np.asarray(data.train_images[index]), data.train_labels[index], targets)


class PeakMemory:
    """The highest RssAnon seen, sampled every 50 ms, and VmHWM at the end (kB → MiB)."""

    def __init__(self):
        self.anon, self.running = 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    @staticmethod
    def status(field: str) -> int:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    def _sample(self) -> None:
        while self.running:
            self.anon = max(self.anon, self.status("RssAnon:"))
            time.sleep(0.05)

    def stop(self) -> dict:
        self.running = False
        self.thread.join()
        return {"peak_anon_mib": self.anon / 1024, "peak_rss_mib": self.status("VmHWM:") / 1024}


def run_variant(args) -> dict:
    """One variant in this process: fold 0 trained, its memory and speed."""
    memory = PeakMemory()
    data = dataset(args)
    if args.variant == "copy":
        fold_run.split_of = copied_split
    config = dataclasses.replace(
        load_config(ROOT / "params.yaml").train,
        model=args.model,
        epochs=args.epochs,
        input_size=args.input_size or None,
        drop_path_rate=None,
        eval_every=args.epochs,
        time_budget_minutes=None,
    )
    fold_of = np.arange(len(data.train_labels)) % 3
    started = time.perf_counter()
    run = fold_run.fit_fold(data, fold_of, 0, config, label=args.variant)
    return {
        "variant": args.variant,
        "images": len(data.train_labels),
        "image_shape": list(data.train_images.shape[1:]),
        "data_mib": data.train_images.nbytes / 2**20,
        "model": args.model,
        "input_size": args.input_size or data.train_images.shape[1],
        "train_img_s": float(np.median([r.train_images_per_s for r in run.fit.history])),
        "seconds": time.perf_counter() - started,
        **memory.stop(),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | images | image | model input | train img/s | peak RssAnon MiB | peak RSS MiB | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = "×".join(str(s) for s in r["image_shape"])
        lines.append(
            f"| {r['variant']} | {r['images']} | {shape} | {r['input_size']} | {r['train_img_s']:.0f} | "
            f"{r['peak_anon_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a prepared folder; default: a generated set")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--input-size", type=int, default=64, help="0: the images' own size")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant, alternating")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/memory_work", help="not for git")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/memory")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    rows = []
    forwarded = list(argv if argv is not None else sys.argv[1:])
    for _ in range(args.repeats):
        for variant in VARIANTS:
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--variant", variant], capture_output=True, text=True
            )
            if done.returncode:
                raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    write_json(rows, args.out.with_suffix(".json"))
    write_text(markdown(rows), args.out.with_suffix(".md"))
    print(markdown(rows))


if __name__ == "__main__":
    main()
