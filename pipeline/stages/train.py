"""Stage `train@<backbone>-<fold>`: one backbone trained on the other folds, scored on its own.

Test-time views are not made here: `oof@<backbone>` makes them from the saved model, so editing
`tta` re-runs that stage and those after it, never this one.

Writes to its output folder:
  model.safetensors   the kept epoch's weights; metadata holds config, data fingerprint, epoch and
                      `targets`, the regression target names whose outputs follow the class logits
  oof_plain.csv       id, fold, label, one probability column per class (the plain view), one value column per target
  history.csv         per-epoch loss, accuracy, the competition's metric (val_score), learning rate, speed
  run.json            resolved settings (`auto` precision and channels-last as measured: pipeline/training/speed.py),
                      best epoch, timings; under train.time_budget_minutes the run's budget, the epochs
                      planned within it and the seconds per epoch they were planned from (the first
                      epoch's, and the probe's before it)

After every epoch the run's state is kept in `--checkpoints` (outside the output folder, which DVC
deletes before re-running a stage): a run killed at any point resumes after its last finished epoch
and ends with the same outputs an uninterrupted run would have written. A checkpoint is resumed
only by a run of the same settings, data and folds, and is deleted once the outputs are written.
`--checkpoints` also holds speed.json, the measured choices of `auto` precision and channels-last
(pipeline/training/speed.py), which stays for the next run on this machine.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import load_config, tuned_config
from pipeline.data import load_folds, load_prepared
from pipeline.evaluation.metrics import competition_metric
from pipeline.training import resume
from pipeline.training.fold_outputs import write_fold_outputs
from pipeline.training.fold_run import fit_fold, fold_checkpoint
from pipeline.training.models import check_backbones

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline train", description=__doc__)
    parser.add_argument("--backbone", required=True, help="a key of `backbones` in params.yaml")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, help="tuning output whose best parameters override params.yaml")
    parser.add_argument("--params", default="params.yaml")
    resumable = "folder for the resumable state of unfinished runs (default: checkpoints)"
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help=resumable)
    args = parser.parse_args(argv)
    params = load_config(args.params)
    config = tuned_config(params.backbone(args.backbone), args.tuned)
    check_backbones(params)  # every backbone, so a typo in the last one fails before the first trains
    data = load_prepared(args.data)
    fold_of = load_folds(args.folds, data.train_ids)
    label = f"{args.backbone} fold {args.fold}"
    metric = competition_metric(params.competition.metric, data.submission_form, data.multi_label)
    checkpoint = fold_checkpoint(args.checkpoints, args.backbone, data, fold_of, args.fold, config, metric)
    run = fit_fold(data, fold_of, args.fold, config, label=label, checkpoint=checkpoint, metric=metric)
    write_fold_outputs(run, data, args.fold, args.backbone, metric, args.out)
    resume.remove(checkpoint)
    log.info(
        "%s: kept epoch %d, val %s %.4f, %.0fs → %s",
        label,
        run.fit.best_epoch,
        metric.name,
        run.fit.best_val_score,
        run.seconds,
        args.out,
    )
