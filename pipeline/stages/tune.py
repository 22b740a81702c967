"""Stage `tune@<backbone>`: an Optuna study over the backbone's `train` settings → tuning/<backbone>.json.

The study itself is pipeline/training/tuning.py: trials train as `train` does and are ranked by the
competition's metric. With tuning off (`tune.enabled: false`, the default) the stage writes a stub that
leaves params.yaml's settings as they are, without loading torch or Optuna.

Several workers may run at once against one storage (`python -m pipeline tune --backbone NAME
--n-trials N`), on one machine with the default journal file or on several with an RDB URL.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline.config import DEFAULT_JOURNAL, STORAGE_ENV, load_config
from pipeline.files import write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", required=True)
    parser.add_argument(
        "--n-trials", type=int, help="trials this worker runs (default: top the study up to tune.n_trials)"
    )
    parser.add_argument(
        "--share-of",
        type=int,
        default=1,
        help="one of this many workers started together: top the study up to tune.n_trials, running its share",
    )
    parser.add_argument(
        "--storage", help=f"journal file path or RDB URL (default: ${STORAGE_ENV}, tune.storage, {DEFAULT_JOURNAL})"
    )
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--folds", type=Path, default=Path("folds/folds.csv"))
    parser.add_argument("--out", type=Path, help="where to write the best parameters (the DVC stage's output)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    base = config.backbone(args.backbone)
    if not config.tune.enabled:
        if args.out:
            write_json({"backbone": args.backbone, "enabled": False, "best_params": {}}, args.out)
        print(f"tune {args.backbone}: tuning is off (tune.enabled: false); train uses params.yaml as it is")
        return
    from pipeline.data import load_prepared  # here: the study's modules load torch, timm and Optuna
    from pipeline.evaluation.metrics import competition_metric
    from pipeline.training.models import check_backbones
    from pipeline.training.tuning import NoTracebackOnCtrlC, run_study, study_summary

    check_backbones(config)  # every backbone, so a typo in the last one fails before the first trains
    logging.getLogger("optuna.study._optimize").addFilter(NoTracebackOnCtrlC())
    data = load_prepared(args.data)
    url = args.storage or config.tune.storage_url()
    # Extra workers draw their own samples; the DVC stage alone is seeded from params.
    extra_worker = args.n_trials is not None or args.share_of > 1
    seed = config.tune.sampler_seed + os.getpid() if extra_worker else None
    metric = competition_metric(config.competition.metric, data.submission_form, data.multi_label)
    study = run_study(
        args.backbone, data, args.folds, base, config.tune, metric, args.n_trials, url, seed, args.share_of
    )
    summary = {**study_summary(study, args.backbone, url), "metric": metric.name}
    if args.out:
        write_json(summary, args.out)
    untuned = "not run" if summary["untuned_value"] is None else f"{summary['untuned_value']:.4f}"
    print(
        f"tune {args.backbone}: best {metric.name} {summary['best_value']:.4f} (untuned setting {untuned}) with "
        f"{summary['best_params']}; "
        f"trials {summary['trials']}; watch it with: optuna-dashboard {summary['storage']}"
        + (f" → {args.out}" if args.out else "")
    )
