"""Face-domain transfer: one backbone trained on a competition from scratch and from another run's weights,
at equal wall-clock time, scored on OOF with intervals.

    python benchmarks/transfer.py --data <prepared> --folds <folds.csv> --model face_vgg \\
        --pretrained <a finished run's models/face_vgg/fold0/model.safetensors> --minutes 5 \\
        --out benchmarks/results/transfer-facial-expressions

Every arm trains each fold of `--folds` for `--minutes` (train.time_budget_minutes: the epochs that fit),
predicts its held-out fold and the test images with flip views, and writes a submission of its fold-averaged
test probabilities in the sample's form (`<out>-<arm>-submission.csv`). The table gives each arm's OOF
accuracy, balanced accuracy and macro-F1 with 95% bootstrap intervals, and the paired interval of the
difference between the arms (the same images resampled for both). Finished folds are kept in `--work`, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import same_settings  # noqa: E402

from pipeline.config import TrainConfig, load_config  # noqa: E402
from pipeline.data import Prepared, load_folds, load_prepared  # noqa: E402
from pipeline.evaluation.bootstrap import bootstrap_interval  # noqa: E402
from pipeline.evaluation.metrics import METRICS  # noqa: E402
from pipeline.evaluation.submission_format import make_submission, read_sample, to_csv_bytes  # noqa: E402
from pipeline.files import read_json, save_array, write_json, write_text  # noqa: E402
from pipeline.training.augment import Normalizer  # noqa: E402
from pipeline.training.fold_run import fit_fold  # noqa: E402
from pipeline.training.models import pick_device  # noqa: E402
from pipeline.training.predict import predict  # noqa: E402

FLIP = ({}, {"hflip": True})
MEASURES = ("accuracy", "balanced_accuracy", "macro_f1")


# name -> (what it tests, overrides of the base config); PRETRAINED stands for --pretrained
PRETRAINED = "<pretrained>"
ARMS: dict[str, tuple[str, dict]] = {
    "scratch": ("from scratch", {"pretrained": False}),
    "pretrained": ("from --pretrained, a new classifier", {"pretrained": PRETRAINED}),
    "pretrained_lr_half": ("from --pretrained, lr ×0.5", {"pretrained": PRETRAINED, "lr_factor": 0.5}),
    "pretrained_layer_decay": (
        "from --pretrained, layer-wise lr decay 0.75",
        {"pretrained": PRETRAINED, "layer_decay": 0.75},
    ),
    "pretrained_freeze": (
        "from --pretrained, the classifier alone for 2 epochs",
        {"pretrained": PRETRAINED, "freeze_epochs": 2},
    ),
}


def arm_config(base: TrainConfig, arm: str, pretrained: str, minutes: float, folds: int) -> TrainConfig:
    """The arm's settings, with `minutes` for each fold's run (the pipeline's budget is for the K fold runs
    together)."""
    overrides = dict(ARMS[arm][1])
    lr = base.lr * overrides.pop("lr_factor", 1)
    if overrides.get("pretrained") == PRETRAINED:
        overrides["pretrained"] = pretrained
    return dataclasses.replace(base, lr=lr, keep_epoch="last", time_budget_minutes=minutes * folds, **overrides)


def run_fold(arm: str, config: TrainConfig, data: Prepared, fold_of: np.ndarray, fold: int, work: Path) -> dict:
    """One fold of one arm trained (or read back from `work` when it ran with these settings): its held-out and
    test probabilities, flip views."""
    done = work / f"{arm}.fold{fold}.json"
    settings = json.loads(json.dumps(dataclasses.asdict(config)))  # as stored: tuples become lists
    if done.exists() and same_settings(read_json(done)["config"], config):
        return read_json(done)
    run = fit_fold(data, fold_of, fold, config, label=f"{arm} fold {fold}")
    trained = run.config
    normalize = Normalizer.of_model(trained, data, pick_device())
    classes = len(data.classes)
    valid = predict(run.fit.model, data.train_images[run.valid_index], normalize, trained, FLIP, classes)[0]
    test = predict(run.fit.model, data.test_images, normalize, trained, FLIP, classes)[0]
    save_array(valid, work / f"{arm}.fold{fold}.valid.npy")
    save_array(test, work / f"{arm}.fold{fold}.test.npy")
    result = {
        "arm": arm,
        "fold": fold,
        "epochs": len(run.fit.history),
        "train_min": run.seconds / 60,
        "last_train_loss": run.fit.history[-1].train_loss,
        "config": settings,
    }
    write_json(result, done)
    return result


def arm_predictions(arm: str, folds: list[int], fold_of: np.ndarray, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """The arm's OOF probabilities (every train image, from the fold that held it out) and its fold-mean test ones."""
    valid = [np.load(work / f"{arm}.fold{fold}.valid.npy") for fold in folds]
    oof = np.zeros((len(fold_of), valid[0].shape[1]), dtype=np.float32)
    for fold, probs in zip(folds, valid):
        oof[fold_of == fold] = probs
    test = np.mean([np.load(work / f"{arm}.fold{fold}.test.npy") for fold in folds], axis=0)
    return oof, test


def scored(oof: np.ndarray, labels: np.ndarray) -> dict:
    """Each measure on OOF with its 95% bootstrap interval."""
    return {name: (METRICS[name](oof, labels), *bootstrap_interval(METRICS[name], oof, labels)) for name in MEASURES}


def paired_difference(first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict:
    """`second` minus `first` for each measure, with the interval over the same resampled images for both."""

    def difference(name: str):
        return lambda a, b, y: METRICS[name](b, y) - METRICS[name](a, y)

    return {
        name: (difference(name)(first, second, labels), *bootstrap_interval(difference(name), first, second, labels))
        for name in MEASURES
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| arm | epochs (per fold) | train min | " + " | ".join(MEASURES) + " |",
        "|---" * (3 + len(MEASURES)) + "|",
    ]
    for row in rows:
        cells = [
            f"{v:+.4f} ({lo:+.4f} to {hi:+.4f})" if row["arm"].startswith("gain") else f"{v:.4f} ({lo:.4f}–{hi:.4f})"
            for v, lo, hi in (row[name] for name in MEASURES)
        ]
        lines.append(
            f"| {row['arm']} | {row.get('epochs', '')} | {row.get('train_min', '')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (`dvc repro prepare`)")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV (`dvc repro folds`)")
    parser.add_argument("--model", default="face_vgg")
    parser.add_argument("--pretrained", required=True, help="the transfer arm's starting weights (file or hub id)")
    parser.add_argument("--minutes", type=float, required=True, help="training minutes of each fold's run")
    parser.add_argument("--epochs", type=int, default=200, help="the most epochs a run trains")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["scratch", "pretrained"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/results/transfer_work"), help="not for git")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    folds = sorted(np.unique(fold_of).tolist())
    base = dataclasses.replace(load_config(args.params).train, model=args.model, epochs=args.epochs)
    args.work.mkdir(parents=True, exist_ok=True)
    rows, predictions = [], {}
    for arm in args.arms:
        config = arm_config(base, arm, args.pretrained, args.minutes, len(folds))
        runs = [run_fold(arm, config, data, fold_of, fold, args.work) for fold in folds]
        oof, test = predictions[arm] = arm_predictions(arm, folds, fold_of, args.work)
        epochs = "/".join(str(run["epochs"]) for run in runs)
        rows.append(
            {
                "arm": arm,
                "what": ARMS[arm][0],
                "epochs": epochs,
                "train_min": f"{sum(r['train_min'] for r in runs):.1f}",
                **scored(oof, data.train_labels),
            }
        )
        sample = read_sample(args.data / "sample_submission.csv")
        submission = make_submission(test, data.test_ids, sample, data.submission_labels, f"{arm} submission")
        write_text(to_csv_bytes(submission).decode(), args.out.parent / f"{args.out.name}-{arm}-submission.csv")
    rows += [
        {"arm": f"gain: {arm} − scratch", **paired_difference(predictions["scratch"][0], oof, data.train_labels)}
        for arm, (oof, _) in predictions.items()
        if arm != "scratch" and "scratch" in predictions
    ]
    write_json(
        {"pretrained": args.pretrained, "minutes_per_fold": args.minutes, "rows": rows}, args.out.with_suffix(".json")
    )
    write_text(markdown(rows), args.out.with_suffix(".md"))
    print(markdown(rows))


if __name__ == "__main__":
    main()
