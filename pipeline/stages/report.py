"""Stage `report`: one leaderboard of the backbones and the ensemble, with what to expect on Kaggle.

Prints (and writes to report/report.md) a table, best first: the OOF score by the competition's metric
(competition.metric; accuracy beside it when that is another) with a 95% bootstrap
interval, per-fold mean ± std, TTA gain, per-class recall, training time, parameter count and
inference time per image; then the ensemble with its weights, and for each backbone trained under
`train.time_budget_minutes` its budget beside the minutes it took and the epochs each fold trained.
The expected leaderboard accuracy is the ensemble's OOF accuracy plus the gain of averaging the fold
models, estimated on the test images (pipeline/evaluation/expectation.py), with a prediction interval;
under another metric, the OOF score and its interval. With a holdout (data.holdout_fraction) it is the
submission's own score there instead, every fold model averaged, under any metric.
Writes metrics/report.json for `dvc metrics show/diff` and `dvc exp show`, per-fold training curves
(report/curves/) and a grid of the most confidently wrong OOF images (report/confident_errors.png),
and warns when OOF may not predict the leaderboard. With several backbones, how often each pair
predicts the same class on OOF: what makes the ensemble's members diverse. When the data has
regression targets (valence, arousal), a table of their OOF RMSE and CCC with 95% bootstrap
intervals per backbone and for the ensemble, beside the RMSE of predicting the train mean.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pipeline.config import Config, FoldsConfig, load_config
from pipeline.data import NO_FACE_FILE, Prepared, fold_columns, label_cells, load_prepared
from pipeline.evaluation.affect import rmse, target_scores
from pipeline.evaluation.blend import blend
from pipeline.evaluation.bootstrap import CONFIDENCE
from pipeline.evaluation.expectation import Expectation, expect, expect_from_holdout, leaderboard_count
from pipeline.evaluation.groups import shared_name_prefixes
from pipeline.evaluation.metrics import Metric, competition_metric, decisions, hits, score
from pipeline.evaluation.predictions import (
    HOLDOUT_FILE,
    fold_dir,
    read_fold_test_tables,
    read_oof_table,
    read_target_values,
)
from pipeline.files import atomic_dir, atomic_path, read_json, write_csv, write_json
from pipeline.runtime.deployment import DeploymentRow, markdown
from pipeline.training.augment import Normalizer
from pipeline.training.models import load_trained, pick_device
from pipeline.training.predict import predict

# Fold accuracies further apart than this many binomial standard errors make OOF suspect.
FOLD_SPREAD_LIMIT = 4.0
FACELESS_EXAMPLES = 5  # file names the report shows of the images no face was found in
FACELESS_LIMIT = 0.1  # above this share of a split without a face found, the report warns


@dataclass
class Row:
    name: str
    metric: str  # the competition's, which `score`, its interval, the fold figures and the TTA gain are in
    score: float
    accuracy: float
    interval: tuple[float, float]
    fold_mean: float
    fold_std: float
    tta_gain: float | None
    per_class: dict[str, float | None]
    train_minutes: float | None
    params_millions: float | None
    ms_per_image: float | None
    budget_minutes: float | None = None  # train.time_budget_minutes: None when the backbone had no budget
    fold_epochs: tuple[int, ...] = ()  # epochs each fold trained within its budget

    def as_metrics(self) -> dict:
        return {
            "metric": self.metric,
            "score": self.score,
            "accuracy": self.accuracy,
            "ci_low": self.interval[0],
            "ci_high": self.interval[1],
            "fold_mean": self.fold_mean,
            "fold_std": self.fold_std,
            "tta_gain": self.tta_gain,
            "per_class": self.per_class,
            "train_minutes": self.train_minutes,
            "params_millions": self.params_millions,
            "ms_per_image": self.ms_per_image,
            "budget_minutes": self.budget_minutes,
        }


def summarize(
    name: str,
    probs: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    classes: list[str],
    metric: Metric,
    plain: np.ndarray | None = None,
) -> Row:
    figures = score(probs, labels, folds, classes, metric)
    per_fold = np.array(list(figures["score_per_fold"].values()))
    tta_gain = None if plain is None else metric.gain(figures["score"], metric(plain, labels))
    return Row(
        name,
        metric.name,
        figures["score"],
        figures["accuracy"],
        metric.interval(probs, labels),
        float(per_fold.mean()),
        float(per_fold.std()),
        tta_gain,
        figures["per_class"],
        None,
        None,
        None,
    )


def inference_ms_per_image(
    weights: Path, views: tuple[dict, ...], data: Prepared, images: int = 512
) -> tuple[float, float]:
    """(milliseconds per image with the test-time views, parameters in millions) of one fold's model."""
    device = pick_device()
    model, config = load_trained(weights, data.channels, len(data.classes) + len(data.target_names), device)
    normalize = Normalizer.of_model(config, data, device)
    sample = np.asarray(data.test_images[:images])
    predict(model, sample[: config.eval_batch_size], normalize, config, views)  # warm-up
    started = time.perf_counter()
    predict(model, sample, normalize, config, views)
    seconds = time.perf_counter() - started
    return 1000 * seconds / len(sample), sum(p.numel() for p in model.parameters()) / 1e6


def oof_warnings(
    folds: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    per_fold: dict[str, float],
    group: np.ndarray,
    files: np.ndarray,
    grouping: FoldsConfig,
) -> list[str]:
    warnings = []
    accuracies = np.array(list(per_fold.values()))
    sizes = np.bincount(folds)
    standard_error = np.sqrt(accuracies.mean() * (1 - accuracies.mean()) / sizes.mean())
    if accuracies.max() - accuracies.min() > FOLD_SPREAD_LIMIT * standard_error:
        warnings.append(
            f"fold accuracies range {accuracies.min():.4f}–{accuracies.max():.4f}, wider than chance "
            f"({FOLD_SPREAD_LIMIT:.0f} standard errors = {FOLD_SPREAD_LIMIT * standard_error:.4f}): check the folds"
        )
    present = (lambda rows: set(np.flatnonzero(rows.any(axis=0)))) if labels.ndim == 2 else (lambda rows: set(rows))
    for fold in np.unique(folds):
        missing = sorted(set(range(len(classes))) - present(labels[folds == fold]))
        if missing:
            warnings.append(f"fold {fold} holds no image of {[classes[i] for i in missing]}: its accuracy ignores them")
    split = pd.DataFrame({"group": group, "fold": folds}).groupby("group")["fold"].nunique()
    if (split > 1).any():
        warnings.append(
            f"{int((split > 1).sum())} groups of images that must share a fold (pixel-identical images, "
            "folds.group_pattern, folds.groups_csv) are split across folds: OOF is optimistic; re-run `folds`"
        )
    ungrouped = ungrouped_names_warning(files, label_cells(labels, classes) if labels.ndim == 2 else labels, grouping)
    if ungrouped:
        warnings.append(ungrouped)
    return warnings


def ungrouped_names_warning(files: np.ndarray, labels: np.ndarray, grouping: FoldsConfig) -> str | None:
    """A warning when file names suggest subjects (S010_*.png in several classes) that no grouping keeps together."""
    if grouping.group_pattern or grouping.groups_csv:
        return None  # the user chose the groups; `folds` applied them
    shared = shared_name_prefixes(files, labels)
    if shared is None or shared.count < grouping.k:  # fewer prefixes than folds name splits of the data, not subjects
        return None
    return (
        f"{shared.count} file-name prefixes (e.g. {shared.example!r}) are shared by images of several classes, "
        f"{shared.mean_images:.1f} images each, and no grouping is set: if a prefix names a subject or session, "
        "its images are split across folds and OOF is optimistic; keep them together with "
        f"folds.group_pattern: '{shared.pattern}' (or folds.groups_csv)"
    )


def face_crop_summary(data: Prepared) -> tuple[str, str | None, dict] | None:
    """With data.face_crop: a line on the images no face was found in (kept whole), a warning when they are many,
    and their count per split; None without face crops."""
    if data.faceless is None:
        return None
    totals = {"train": len(data.train_ids), "test": len(data.test_ids)}
    missing = {split: int((data.faceless["split"] == split).sum()) for split in totals}
    examples = ", ".join(data.faceless["file"].head(FACELESS_EXAMPLES))
    counts = " and ".join(f"{missing[split]} of {totals[split]} {split}" for split in totals)
    line = f"Face crops (data.face_crop): no face found in {counts} images; they were kept whole" + (
        f" (e.g. {examples}; all in {NO_FACE_FILE} of the prepared data)." if examples else "."
    )
    warning = None
    if any(missing[split] > FACELESS_LIMIT * totals[split] for split in totals):
        warning = (
            f"more than {FACELESS_LIMIT:.0%} of a split's images have no face found: the model learns from whole "
            "images and face crops mixed; look at them, or set data.face_crop: false if faces fill the images"
        )
    return line, warning, missing


def confident_errors_grid(
    data: Prepared, probs: np.ndarray, labels: np.ndarray, path: Path, count: int = 24, scale: int = 3
) -> None:
    """PNG grid of the OOF images the model got wrong with the most confidence, captioned true and predicted
    (multi-label: the classes listed, the predicted ones decided with the most confident one's probability)."""
    wrong = np.flatnonzero(~hits(probs, labels))
    worst = wrong[np.argsort(-probs[wrong].max(1))][:count]
    true_names = label_cells(labels, data.classes)
    predicted_names = label_cells(decisions(probs) if labels.ndim == 2 else probs.argmax(1), data.classes)
    size = data.train_images.shape[1] * scale
    columns = 6
    caption = 24
    grid = Image.new("RGB", (columns * size, max(1, -(-len(worst) // columns)) * (size + caption)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=11)
    for slot, index in enumerate(worst):
        image = (
            Image.fromarray(np.asarray(data.train_images[index]))
            .convert("RGB")
            .resize((size, size), Image.Resampling.NEAREST)
        )
        x, y = slot % columns * size, slot // columns * (size + caption)
        grid.paste(image, (x, y))
        draw.text((x + 2, y + size + 1), f"true {true_names[index]}", fill="black", font=font)
        draw.text(
            (x + 2, y + size + 12),
            f"pred {predicted_names[index]} {probs[index].max():.2f}",
            fill="firebrick",
            font=font,
        )
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def format_table(rows: list[Row], classes: list[str]) -> str:
    """Per model: its OOF score by the competition's metric, then accuracy as well where the metric is another."""
    metric = rows[0].metric
    also_accuracy = metric != "accuracy"
    header = [
        "model",
        f"OOF {metric}",
        "95% CI",
        "folds mean±std",
        "TTA gain",
        *(["OOF acc"] if also_accuracy else []),
        "train min",
        "params M",
        "ms/img",
    ] + [f"{c[:7]}" for c in classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row.name,
            f"{row.score:.4f}",
            f"{row.interval[0]:.4f}–{row.interval[1]:.4f}",
            f"{row.fold_mean:.4f}±{row.fold_std:.4f}",
            _maybe(row.tta_gain, "+.4f"),
            *([f"{row.accuracy:.4f}"] if also_accuracy else []),
            _maybe(row.train_minutes, ".1f"),
            _maybe(row.params_millions, ".2f"),
            _maybe(row.ms_per_image, ".3f"),
        ]
        cells += [_maybe(row.per_class[c], ".3f") for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _maybe(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def backbone_row(name: str, config: Config, data: Prepared, metric: Metric, oof_dir: Path, models_dir: Path) -> Row:
    probs, labels, folds = read_oof_table(oof_dir / f"{name}.csv", data.classes, data.train_ids, data.multi_label)
    plain, _, _ = read_oof_table(oof_dir / f"{name}.no_tta.csv", data.classes, data.train_ids, data.multi_label)
    row = summarize(name, probs, labels, folds, data.classes, metric, plain=plain)
    first = fold_dir(models_dir, name, config.folds.ids[0])
    runs = [read_json(fold_dir(models_dir, name, f) / "run.json") for f in config.folds.ids]
    add_training_time(row, runs)
    row.ms_per_image, row.params_millions = inference_ms_per_image(
        first / "model.safetensors", config.tta.of(name), data
    )
    return row


def add_training_time(row: Row, runs: list[dict]) -> None:
    """The minutes the backbone's fold runs (their run.json) took; under a time budget, the budget too."""
    row.train_minutes = sum(r["seconds"] for r in runs) / 60
    budgets = [r.get("budget_seconds") for r in runs]
    if None not in budgets:
        row.budget_minutes = sum(budgets) / 60
        row.fold_epochs = tuple(r["planned_epochs"] for r in runs)


def budget_lines(rows: list[Row]) -> list[str]:
    return [
        f"Time budget of {row.name}: {row.budget_minutes:.1f} min, {row.train_minutes:.1f} min taken, "
        f"epochs per fold {', '.join(map(str, row.fold_epochs))}."
        for row in rows
        if row.budget_minutes is not None
    ]


def targets_section(names: list[str], data: Prepared, oof_dir: Path, ensemble_dir: Path) -> tuple[str, dict]:
    """Markdown table and metrics of the regression targets' OOF scores, per model, with the baseline of
    predicting the train mean (its RMSE is the targets' spread: a head that learned nothing scores it)."""
    true = data.train_targets
    sources = {name: oof_dir / f"{name}.csv" for name in names} | {"ensemble": ensemble_dir / "oof.csv"}
    scores = {
        model: target_scores(read_target_values(path, data.target_names, data.train_ids), true, data.target_names)
        for model, path in sources.items()
    }
    baseline = {
        target: rmse(np.full(len(true), np.nanmean(true[:, i])), true[:, i])
        for i, target in enumerate(data.target_names)
    }
    lines = [
        "## Regression targets (OOF, rows with a value)",
        "",
        "| model | target | RMSE | 95% CI | CCC | 95% CI | train-mean RMSE | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, per_target in scores.items():
        for target, s in per_target.items():
            lines.append(
                f"| {model} | {target} | {s['rmse']:.4f} | {s['rmse_ci'][0]:.4f}–{s['rmse_ci'][1]:.4f} | "
                f"{s['ccc']:.4f} | "
                f"{s['ccc_ci'][0]:.4f}–{s['ccc_ci'][1]:.4f} | {baseline[target]:.4f} | {s['n']} |"
            )
    return "\n".join(lines), {**scores, "train_mean_rmse": baseline}


def agreement_section(names: list[str], data: Prepared, oof_dir: Path) -> tuple[str, dict]:
    """How often two backbones predict the same class on the OOF images: members that agree less, at
    similar accuracy, have more for a blend to gain."""
    predicted = {
        name: read_oof_table(oof_dir / f"{name}.csv", data.classes, data.train_ids, data.multi_label)[0].argmax(1)
        for name in names
    }
    pairs = {
        f"{a}|{b}": float((predicted[a] == predicted[b]).mean()) for i, a in enumerate(names) for b in names[i + 1 :]
    }
    lines = [
        "## Agreement of the backbones' OOF predictions (same class predicted)",
        "",
        "| | " + " | ".join(names[1:]) + " |",
        "|---|" + "---|" * (len(names) - 1),
    ]
    for i, a in enumerate(names[:-1]):
        lines.append(
            f"| {a} | "
            + " | ".join("" if j <= i else f"{pairs[f'{a}|{b}']:.3f}" for j, b in enumerate(names) if j > 0)
            + " |"
        )
    return "\n".join(lines), pairs


def deployment_section(deployment: dict) -> str:
    """The export stage's table: what each ONNX graph weighs, costs per face and scores, fp32 against int8."""
    rows = [DeploymentRow.from_dict(row) for row in deployment["rows"]]
    return "## Deployment (ONNX export, export/)\n\n" + markdown(rows, deployment["caption"])


def fold_test_probs(config: Config, data: Prepared, test_dir: Path, weights: dict[str, float]) -> list[np.ndarray]:
    """Per fold, the test probabilities of that fold's models blended with the ensemble's weights."""
    names = config.members
    per_backbone = [
        read_fold_test_tables(test_dir / f"{name}.folds.csv", data.classes, data.test_ids, config.folds.ids)
        for name in names
    ]
    return [
        blend([tables[i] for tables in per_backbone], np.array([weights[name] for name in names]))
        for i in range(len(config.folds.ids))
    ]


def expectation_lines(expected: Expectation, test_count: int) -> list[str]:
    share = f"{leaderboard_count(test_count)} of the {test_count} test images"
    if expected.temperature is None:
        gain = (
            "The gain of averaging the fold models could not be estimated (no temperature makes the fold models' "
            "test probabilities reproduce their OOF accuracy), so it is taken as 0."
        )
    else:
        gain = (
            f"That is the OOF accuracy {expected.oof_accuracy:.4f}, which scores one fold model per image, plus "
            f"{expected.gain:+.4f} "
            f"(± {expected.gain_se:.4f}) for averaging the fold models, as the submission does: estimated on the test "
            "images, "
            f"where a fold model's class differs from their average's on {expected.disagreement:.1%}."
        )
    return [
        f"Expected leaderboard accuracy of submissions/ensemble.csv: {expected.accuracy:.4f} "
        f"(95% interval {expected.interval[0]:.4f}–{expected.interval[1]:.4f} for a leaderboard scored on {share}).",
        gain,
    ]


def tempered_note(sharpness: float | None) -> str:
    """Under log-loss the ensemble submits probabilities at the temperature fitted on OOF; the backbones' own
    rows and submissions are as the models gave them, so part of the gain is that temperature's."""
    if sharpness is None:
        return ""
    return (
        f" The ensemble's probabilities carry the temperature fitted on OOF (powered by {sharpness:.2f}); the "
        "backbones' rows and submissions are untempered."
    )


def expected_section(
    ensemble: Row,
    metric: Metric,
    fold_test: list[np.ndarray],
    oof_count: int,
    test_count: int,
    single_label: bool = True,
) -> tuple[list[str], dict]:
    """What the ensemble's submission should score on the leaderboard: lines for the report and its metrics."""
    if metric.name == "accuracy" and single_label:  # the fold-averaging model counts most-probable-class hits
        expected = expect(fold_test, ensemble.accuracy, oof_count, CONFIDENCE)
        return expectation_lines(expected, test_count), expected.as_metrics()
    low, high = ensemble.interval
    lines = [
        f"Expected leaderboard {metric.name} of submissions/ensemble.csv: about its OOF {ensemble.score:.4f} "
        f"(95% bootstrap interval {low:.4f}–{high:.4f} over the OOF images). That scores one fold model per image; "
        "the submission averages the fold models, whose gain is modelled for accuracy only."
    ]
    return lines, {"metric": metric.name, "score": ensemble.score, "interval": [low, high], "gain": None}


def holdout_section(
    ensemble_dir: Path, data: Prepared, metric: Metric, unlabelled: dict, test_count: int
) -> tuple[list[str], dict]:
    """The expected leaderboard as the submission's score on the holdout (ensemble/holdout.csv), beside what OOF
    and the gain estimated on the test images (`unlabelled`) would have said."""
    probs, labels, _ = read_oof_table(ensemble_dir / HOLDOUT_FILE, data.classes, data.holdout_ids, data.multi_label)
    expected = expect_from_holdout(probs, labels, metric, test_count, CONFIDENCE)
    share = f"{leaderboard_count(test_count)} of the {test_count} test images"
    estimate = unlabelled.get("accuracy", unlabelled.get("score"))
    lines = [
        f"Expected leaderboard {metric.name} of submissions/ensemble.csv: {expected.score:.4f} (95% interval "
        f"{expected.interval[0]:.4f}–{expected.interval[1]:.4f} for a leaderboard scored on {share}): its score on "
        f"the {expected.images} holdout images, which no model trained on, every fold model averaged as the "
        f"submission averages them. Without the holdout, OOF and the gain estimated on the test images would say "
        f"{estimate:.4f}."
    ]
    return lines, {**expected.as_metrics(), "unlabelled_estimate": unlabelled}


def build_report(
    config: Config,
    data: Prepared,
    oof_dir: Path,
    test_dir: Path,
    models_dir: Path,
    ensemble_dir: Path,
    fold_of: np.ndarray,
    group_of: np.ndarray,
    deployment: dict,
    out_dir: Path,
) -> tuple[str, dict]:
    metric = competition_metric(config.competition.metric, data.submission_form, data.multi_label)
    rows = sorted(
        (backbone_row(name, config, data, metric, oof_dir, models_dir) for name in config.members),
        key=lambda r: metric.loss(r.score),
    )
    weights = read_json(ensemble_dir / "weights.json")
    probs, labels, folds = read_oof_table(ensemble_dir / "oof.csv", data.classes, data.train_ids, data.multi_label)
    ensemble = summarize("ensemble", probs, labels, folds, data.classes, metric)
    used = [r for r in rows if weights["weights"][r.name] > 0]
    ensemble.train_minutes = sum(r.train_minutes for r in used)
    ensemble.ms_per_image = sum(r.ms_per_image for r in used)
    ensemble.params_millions = sum(r.params_millions for r in used)
    gain = metric.gain(ensemble.score, rows[0].score)
    expected_lines, expected_metrics = expected_section(
        ensemble,
        metric,
        fold_test_probs(config, data, test_dir, weights["weights"]),
        len(labels),
        len(data.test_ids),
        not data.multi_label,
    )
    if data.has_holdout and weights["holdout"]["scores_submission"]:  # not under a grade cut: see `ensemble`
        expected_lines, expected_metrics = holdout_section(
            ensemble_dir, data, metric, expected_metrics, len(data.test_ids)
        )
    warnings = oof_warnings(
        fold_of,
        data.train_labels,
        data.classes,
        score(probs, labels, folds, data.classes, metric)["per_fold"],
        group_of,
        data.train_files,
        config.folds,
    )

    faces = face_crop_summary(data)
    if faces and faces[1]:
        warnings.append(faces[1])
    weight_text = ", ".join(f"{name} {w:.2f}" for name, w in weights["weights"].items() if w > 0)
    text = "\n".join(
        [
            "## OOF leaderboard (best first)",
            "",
            format_table(rows + [ensemble], data.classes),
            "",
            f"Ensemble weights: {weight_text}. {weights['verdict']}.",
            f"Ensemble gain over the best single backbone ({rows[0].name}): {gain:+.4f} {metric.name}."
            + tempered_note(weights.get("sharpness")),
            *budget_lines(rows),
            "",
            *expected_lines,
            *(["", faces[0]] if faces else []),
            *(
                [""] + [f"WARNING: {w}" for w in warnings]
                if warnings
                else ["", "No warnings: folds agree, every class is in every fold, repeated images share folds."]
            ),
        ]
    )
    target_metrics = None
    if data.target_names:
        target_text, target_metrics = targets_section(config.members, data, oof_dir, ensemble_dir)
        text += "\n\n" + target_text
    agreement = None
    if len(config.members) > 1:
        agreement_text, agreement = agreement_section(config.members, data, oof_dir)
        text += "\n\n" + agreement_text
    text += "\n\n" + deployment_section(deployment)
    metrics = {r.name: r.as_metrics() for r in rows}
    metrics["ensemble"] = {**ensemble.as_metrics(), "weights": weights["weights"], "gain_over_best_single": gain}
    metrics["expected_leaderboard"] = expected_metrics
    metrics["warnings"] = len(warnings)
    if faces:
        metrics["no_face"] = faces[2]
    if target_metrics is not None:
        metrics["targets"] = target_metrics
    if agreement is not None:
        metrics["agreement"] = agreement
    with atomic_dir(out_dir) as tmp:
        (tmp / "report.md").write_text(text + "\n")
        for name in config.members:
            for f in config.folds.ids:
                history = pd.read_csv(fold_dir(models_dir, name, f) / "history.csv")
                scored = history.dropna(subset=["val_acc"])  # epochs skipped by train.eval_every
                write_csv(
                    scored[["epoch", "train_loss", "val_loss", "val_acc", "val_score"]],
                    tmp / "curves" / f"{name}_fold{f}.csv",
                )
        confident_errors_grid(data, probs, labels, tmp / "confident_errors.png")
    return text, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--folds", type=Path, default=Path("folds/folds.csv"))
    parser.add_argument("--oof", type=Path, default=Path("oof"))
    parser.add_argument(
        "--test", type=Path, default=Path("test_predictions"), help="the backbones' test probabilities, per fold model"
    )
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--ensemble", type=Path, default=Path("ensemble"))
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument(
        "--deployment", type=Path, default=Path("metrics/export.json"), help="the export stage's deployment table"
    )
    parser.add_argument("--metrics", type=Path, default=Path("metrics/report.json"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    data = load_prepared(args.data)
    fold_of, group_of = fold_columns(args.folds, data.train_ids, "fold", "group")
    text, metrics = build_report(
        config,
        data,
        args.oof,
        args.test,
        args.models,
        args.ensemble,
        fold_of,
        group_of,
        read_json(args.deployment),
        args.out,
    )
    write_json(metrics, args.metrics)
    print(text)
    print(f"\nreport: wrote {args.out}/report.md, {args.out}/curves/, {args.out}/confident_errors.png, {args.metrics}")
