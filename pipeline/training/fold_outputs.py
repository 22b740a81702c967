"""What a finished fold run leaves in its output folder (`train@` and `distill@` write the same): the kept
weights, the validation fold's plain-view predictions, the epoch history and the run's settings and timings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import Prepared, label_cells
from pipeline.evaluation.metrics import Metric
from pipeline.evaluation.predictions import probability_table, with_targets
from pipeline.files import atomic_dir, write_csv, write_json
from pipeline.training.fold_run import FoldRun
from pipeline.training.models import save_weights
from pipeline.training.pretrained import resolve


def write_fold_outputs(run: FoldRun, data: Prepared, fold: int, backbone: str, metric: Metric, out_dir: Path) -> None:
    config = run.config  # as trained: inference reads its precision and channels-last, never `auto`
    weights = resolve(config)
    ids = data.train_ids[run.valid_index]
    labels = label_cells(data.train_labels[run.valid_index], data.classes)
    folds = np.full(len(ids), fold)
    summary = {
        "backbone": backbone,
        "fold": fold,
        "best_epoch": run.fit.best_epoch,
        "metric": metric.name,
        "best_val_score": run.fit.best_val_score,
        "seconds": run.seconds,
        "budget_seconds": None if run.plan is None else run.plan.budget_seconds,
        "planned_epochs": config.epochs if run.plan is None else run.plan.epochs,
        "seconds_per_epoch_measured": None if run.plan is None else run.plan.seconds_per_epoch,
        "seconds_per_epoch_probe": None
        if run.plan is None
        else run.plan.probe_seconds_per_epoch,  # before the first epoch re-planned
        "low_res_time_ratio": None
        if run.plan is None
        else run.plan.low_res_time_ratio,  # a step on smaller images over a full-size one
        "data_fingerprint": data.fingerprint,
        "config": dataclasses.asdict(config),
        "targets": data.target_names,  # the model has len(classes) + len(targets) outputs, in that order
        "pretrained": None if weights is None else weights.identity,  # what the run started from
    }
    names = data.target_names
    with atomic_dir(out_dir) as tmp:
        save_weights(
            run.fit.model,
            tmp / "model.safetensors",
            {k: summary[k] for k in ("backbone", "fold", "best_epoch", "data_fingerprint", "config", "targets")},
        )
        write_csv(
            with_targets(
                probability_table(ids, run.oof_plain, data.classes, fold=folds, label=labels),
                run.oof_plain_values,
                names,
            ),
            tmp / "oof_plain.csv",
        )
        write_csv(pd.DataFrame(run.fit.history_rows()).assign(fold=fold), tmp / "history.csv")
        write_json(summary, tmp / "run.json")
