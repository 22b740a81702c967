"""Stage `distill@<student>`: a student trained per fold on its labels and on what that fold's teachers say,
then scored as `oof@` scores a backbone.

Fold k's student learns from fold k's train images with their labels and the mean probabilities of the
teachers' fold-k models (teachers/<teacher>.npz, from `teach@`), and, with `distill.pseudo_labels`, from the test
images, whose only target those probabilities are; with `distill.init_from` it starts from that teacher's fold-k
model. No teacher model that saw fold k takes part, so the student's
OOF is as honest as a backbone's (pipeline/training/distillation.py). Its fold runs are written to
models/<student>/fold<k> as `train@`'s are; its OOF tables, test probabilities and metrics under the same names as
`oof@`'s, so the ensemble, submission, bundle, export and report take it as one more member.

Each fold's state is kept in `--checkpoints` until the whole stage ends: a killed run resumes, its finished folds
read back rather than trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from pipeline.config import load_config
from pipeline.data import load_folds, load_prepared
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import competition_metric
from pipeline.evaluation.predictions import fold_dir
from pipeline.training import resume
from pipeline.training.distillation import read_teaching, teacher_weights
from pipeline.training.fold_outputs import write_fold_outputs
from pipeline.training.fold_run import fit_fold, fold_checkpoint
from pipeline.training.models import check_backbones
from pipeline.training.scoring import score_member

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline distill", description=__doc__)
    parser.add_argument("--student", required=True, help="a key of `distill.students` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV")
    parser.add_argument("--teachers", type=Path, required=True, help="folder of the teachers' files (teachers/)")
    parser.add_argument("--models", type=Path, required=True, help="folder of the fold runs (models/)")
    parser.add_argument("--oof", type=Path, required=True, help="folder for the OOF tables (oof/)")
    parser.add_argument("--test-out", type=Path, required=True, help="folder for the test probabilities")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    resumable = "folder for the resumable state of unfinished runs (default: checkpoints)"
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help=resumable)
    args = parser.parse_args(argv)
    params = load_config(args.params)
    config = params.backbone(args.student)
    check_backbones(params)
    data = load_prepared(args.data)
    if data.multi_label:
        raise ConfigError(
            f"distill.students.{args.student}: a student learns one class per image from its teachers' probabilities; "
            "this competition is multi-label: remove distill.students"
        )
    fold_of = load_folds(args.folds, data.train_ids)
    metric = competition_metric(params.competition.metric, data.submission_form, data.multi_label)
    checkpoints = []
    for fold in params.folds.ids:
        label = f"{args.student} fold {fold}"
        teaching = read_teaching(args.teachers, params.distill, fold, data)
        if params.distill.init_from is not None:  # the fold's own teacher model: it never saw fold k either
            start = teacher_weights(args.teachers, params.distill.init_from, fold)
            config = dataclasses.replace(params.backbone(args.student), pretrained=str(start))
        checkpoint = fold_checkpoint(args.checkpoints, args.student, data, fold_of, fold, config, metric, teaching)
        run = fit_fold(
            data, fold_of, fold, config, label=label, checkpoint=checkpoint, metric=metric, teaching=teaching
        )
        write_fold_outputs(run, data, fold, args.student, metric, fold_dir(args.models, args.student, fold))
        checkpoints.append(checkpoint)
        log.info(
            "%s: kept epoch %d, val %s %.4f, %.0fs",
            label,
            run.fit.best_epoch,
            metric.name,
            run.fit.best_val_score,
            run.seconds,
        )
    score_member(params, args.student, data, fold_of, args.models, args.oof, args.test_out, args.metrics)
    for checkpoint in checkpoints:
        resume.remove(checkpoint)
