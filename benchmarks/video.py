"""Milliseconds per frame of `python -m pipeline video`, end to end and by part, and the latency of
one face through `predict`'s classifier.

    python benchmarks/video.py                      # bundle/ from `make run`; 640×480 clips made here
    python benchmarks/video.py --model bundle --frames 250 --threads 2
    python benchmarks/video.py --model other/bundle --out benchmarks/results/video-other --frame frame.png

The clips are scikit-image's astronaut photo (a real face shipped inside the package) sliding over a
640×480 background, written as mp4 and decoded back, so decoding and encoding are real. Each row
runs the same code as the command: decode, detect (every --detect-every frames), classify, draw,
encode; `holds` names the members the variant's graph runs (fast.onnx may hold a student alone).
Results go to benchmarks/results/video.{md,json} (--out: another stem); --frame keeps the middle frame of
the fast variant's annotated one-face clip as a PNG.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.commands import video  # noqa: E402
from pipeline.machine import available_cores  # noqa: E402
from pipeline.runtime.classifier import Classifier  # noqa: E402
from tests.media import face_frames, write_video  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FPS = 25.0
BUDGET_MS = 1000 / FPS


def video_row(
    clip: Path, variant: str, detector: str, args: argparse.Namespace, out_dir: Path
) -> tuple[dict, Classifier]:
    """One run of the command's own code on `clip`, with its defaults except what this benchmark sets."""
    options = video.parse_args(
        [
            str(clip),
            "--out",
            str(out_dir / "annotated.mp4"),
            "--model",
            str(args.model),
            "--variant",
            variant,
            "--detector",
            detector,
            "--threads",
            str(args.threads),
            "--detect-every",
            str(args.detect_every),
            "--detect-width",
            str(args.detect_width),
            "--fps",
            str(FPS),
        ]
    )
    labeller = video.open_labeller(options)
    capture, what = video.open_source(options.source)
    stats = video.run_video(capture, what, labeller, FPS, options.out, options.out.with_suffix(".csv"), None)
    return {
        "holds": "+".join(m.name for m in labeller.classifier.info.members),
        "frames": stats.frames,
        "face_labels": stats.faces,
        **{k: round(v, 2) for k, v in stats.per_frame_ms().items()},
    }, labeller.classifier


def keep_middle_frame(clip: Path, out: Path) -> None:
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        found, frame = capture.read()
        if not found:
            break
        frames.append(frame)
    capture.release()
    if frames:
        cv2.imwrite(str(out), frames[len(frames) // 2])


def face_latency(classifier: Classifier, face_rgb: np.ndarray, repeats: int) -> dict:
    """One face at a time, as `predict` on one photo's face: preparing the crop, then the model."""
    prepare_ms, model_ms = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        face = classifier.face_input(face_rgb)[None]
        prepared = time.perf_counter()
        classifier.probabilities(face)
        prepare_ms.append(1000 * (prepared - started))
        model_ms.append(1000 * (time.perf_counter() - prepared))
    return {
        "prepare_ms": round(statistics.median(prepare_ms), 2),
        "model_ms": round(statistics.median(model_ms), 2),
        "total_ms": round(statistics.median(np.add(prepare_ms, model_ms)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("bundle"))
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--detect-width", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=200, help="single-face calls timed per variant")
    parser.add_argument("--out", type=Path, default=RESULTS / "video", help="results stem (.md, .json)")
    parser.add_argument("--frame", type=Path, help="keep one annotated frame of the fast variant here (PNG)")
    args = parser.parse_args()
    rows, latency = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {
            faces: write_video(tmp / f"faces{faces}.mp4", face_frames(args.frames, faces=faces, side=220, step=2), FPS)
            for faces in (1, 2)
        }
        face_rgb = np.ascontiguousarray(face_frames(1, side=220)[0][180:300, 80:200, ::-1])
        for variant in ("fast", "full"):
            for detector in ("centerface", "haar"):
                for faces, clip in clips.items():
                    figures, classifier = video_row(clip, variant, detector, args, tmp)
                    rows.append({"variant": variant, "detector": detector, "faces": faces, **figures})
                    print(json.dumps(rows[-1]), flush=True)
                    if args.frame and (variant, detector, faces) == ("fast", "centerface", 1):
                        keep_middle_frame(tmp / "annotated.mp4", args.frame)
            latency[variant] = face_latency(classifier, face_rgb, args.repeats)
    header = ["variant", "holds", "detector", "faces", "total", *video.PARTS]
    lines = [
        f"Video at 640×480, detection every {args.detect_every} frames at {args.detect_width} px wide, {args.threads} "
        "threads, "
        f"{args.frames} frames; {platform.processor() or platform.machine()}, {available_cores()} cores. ms a frame:",
        "",
        "| " + " | ".join(header) + " | within 40 ms |",
        "|" + "---|" * (len(header) + 1),
    ]
    lines += [
        "| " + " | ".join(str(row[h]) for h in header) + f" | {'yes' if row['total'] <= BUDGET_MS else 'no'} |"
        for row in rows
    ]
    lines += [
        "",
        "One face through the classifier (median ms): "
        + "; ".join(
            f"{variant}: {v['total_ms']} (crop to model input {v['prepare_ms']}, model {v['model_ms']})"
            for variant, v in latency.items()
        ),
    ]
    report = "\n".join(lines)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(report + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps({"rows": rows, "single_face": latency, "threads": args.threads}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
