"""Reading the train runs' predictions back, per backbone, with all folds put together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import PipelineError


@dataclass(frozen=True)
class BackbonePredictions:
    ids: np.ndarray  # train ids, in the prepared train order
    folds: np.ndarray
    labels: np.ndarray  # int class indices
    oof_plain: np.ndarray  # N×classes
    oof_tta: np.ndarray
    test: np.ndarray  # test × classes, TTA views and fold models averaged
    test_ids: np.ndarray


def fold_dir(models_dir: str | Path, backbone: str, fold: int) -> Path:
    return Path(models_dir) / backbone / f"fold{fold}"


def load_backbone(models_dir: str | Path, backbone: str, fold_ids: tuple[int, ...], classes: list[str], train_ids: np.ndarray) -> BackbonePredictions:
    dirs = [fold_dir(models_dir, backbone, fold) for fold in fold_ids]
    missing = [str(d) for d in dirs if not (d / "run.json").exists()]
    if missing:
        raise FileNotFoundError(f"missing train outputs {missing}; run `dvc repro train` first")
    plain = _concat_in_order([d / "oof_plain.csv" for d in dirs], train_ids)
    tta = _concat_in_order([d / "oof_tta.csv" for d in dirs], train_ids)
    tests = [pd.read_csv(d / "test_tta.csv", dtype={"id": str}, keep_default_na=False) for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    return BackbonePredictions(
        ids=tta["id"].to_numpy(),
        folds=tta["fold"].to_numpy(),
        labels=tta["label"].map(index).to_numpy(),
        oof_plain=plain[classes].to_numpy(np.float64),
        oof_tta=tta[classes].to_numpy(np.float64),
        test=np.mean([t[classes].to_numpy(np.float64) for t in tests], axis=0),
        test_ids=tests[0]["id"].to_numpy(),
    )


def _concat_in_order(paths: list[Path], train_ids: np.ndarray) -> pd.DataFrame:
    table = pd.concat([pd.read_csv(p, dtype={"id": str, "label": str}, keep_default_na=False) for p in paths], ignore_index=True)
    if len(table) != len(train_ids) or set(table["id"]) != set(train_ids):
        raise PipelineError(f"{paths[0].parent.parent}: the folds' predictions do not cover the train set once each; re-run its train stages")
    return table.set_index("id").loc[train_ids].reset_index()


def oof_table(ids: np.ndarray, folds: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The documented OOF schema: id, fold, label, pred, then one probability column per class."""
    names = np.array(classes)
    table = pd.DataFrame({"id": ids, "fold": folds, "label": names[labels], "pred": names[probs.argmax(axis=1)]})
    return pd.concat([table, pd.DataFrame(probs, columns=classes)], axis=1)
