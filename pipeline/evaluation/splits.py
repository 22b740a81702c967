"""How the labelled images are split for scoring: K class-stratified folds with every group in one fold
(`assign_folds`), the groups themselves (`fold_groups`: pixel twins, a file-name key, a groups file), and
the holdout `prepare` sets aside from every fold (`holdout_mask`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import FoldsConfig
from pipeline.errors import PipelineError
from pipeline.evaluation.groups import duplicate_groups, merge_groupings, pattern_groups, read_groups


def assign_folds(labels: np.ndarray, groups: np.ndarray, config: FoldsConfig) -> np.ndarray:
    """Each image's fold: class-stratified (multi-label: every class's share kept by iterative stratification)
    with every group in one fold."""
    smallest = (labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels)).min()
    if smallest < config.k:
        raise PipelineError(
            f"the rarest class has {int(smallest)} images, fewer than K={config.k} folds; use fewer folds.ids or drop "
            "that class (data.drop_classes)"
        )
    count = len(np.unique(groups))
    if count < config.k:
        raise PipelineError(
            f"the train images form {count} groups that must each stay in one fold, fewer than K={config.k} folds; "
            "use fewer folds.ids or finer groups (folds.group_pattern, folds.groups_csv)"
        )
    if labels.ndim == 2:
        return multi_label_folds(labels, groups, config)
    splitter = StratifiedGroupKFold(n_splits=config.k, shuffle=True, random_state=config.seed)
    fold = np.full(len(labels), -1, np.int64)
    for number, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[valid] = number
    return fold


def multi_label_folds(labels: np.ndarray, groups: np.ndarray, config: FoldsConfig) -> np.ndarray:
    """Folds of multi-label images by iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML 2011) over
    the groups, each weighing as many images as it holds: the rarest class's groups are dealt out first, each to
    the fold that lacks most of that class, then most images; ties drawn at random. (Written here: the
    `iterative-stratification` package installs a top-level `tests` package that shadows a project's own.)"""
    keys, group_of = np.unique(groups, return_inverse=True)
    per_group = np.zeros((len(keys), labels.shape[1]))
    np.add.at(per_group, group_of, labels)
    sizes = np.bincount(group_of).astype(np.float64)
    rng = np.random.default_rng(config.seed)
    wanted = np.tile(labels.sum(axis=0) / config.k, (config.k, 1))  # images of each class each fold still lacks
    room = np.full(config.k, len(labels) / config.k)  # images each fold still lacks
    fold = np.full(len(keys), -1, np.int64)

    def deal(group: int, lacking: np.ndarray) -> None:
        candidates = np.flatnonzero(lacking == lacking.max())
        candidates = candidates[room[candidates] == room[candidates].max()]
        chosen = rng.choice(candidates)
        fold[group] = chosen
        wanted[chosen] -= per_group[group]
        room[chosen] -= sizes[group]

    while True:
        left = fold < 0
        remaining = per_group[left].sum(axis=0)
        if not (remaining > 0).any():
            break
        rarest = np.flatnonzero(remaining > 0)[np.argmin(remaining[remaining > 0])]
        for group in rng.permutation(np.flatnonzero(left & (per_group[:, rarest] > 0))):
            deal(group, wanted[:, rarest])
    for group in rng.permutation(np.flatnonzero(fold < 0)):  # groups without any class
        deal(group, room)
    return fold[group_of]


def fold_groups(
    files: np.ndarray, ids: np.ndarray, images: np.ndarray, config: FoldsConfig
) -> tuple[np.ndarray, list[str]]:
    """Group number per image (tied by name key, groups file or identical pixels), and a note per grouping."""
    given = {}
    # The name pattern first: a pattern that misses some names fails in a moment, before any image is read.
    if config.group_pattern:
        given["folds.group_pattern"] = pattern_groups(files, config.group_pattern)
    if config.groups_csv:
        given["folds.groups_csv"] = read_groups(config.groups_csv, ids)
    twins = duplicate_groups(images)
    notes = [group_note(groups, key) for key, groups in given.items()]
    notes.append(f"{len(twins) - len(np.unique(twins))} repeated images kept with their twins")
    return merge_groupings(twins, *given.values()), notes


def group_note(groups: np.ndarray, key: str) -> str:
    count = len(np.unique(groups))
    return f"{count} groups from {key} (mean {len(groups) / count:.1f} images each)"


def holdout_mask(labels: np.ndarray, groups: np.ndarray, fraction: float, config: FoldsConfig) -> np.ndarray:
    """Which images form the holdout: class-stratified, whole groups only (a twin of a holdout image in training
    would score the holdout on an image the models saw). It is the first of round(1 / fraction) parts drawn as the
    K folds are, so its share is 1 / round(1 / fraction): 0.1 sets aside a tenth, 0.15 a seventh."""
    parts = max(2, round(1 / fraction))
    try:
        return assign_folds(labels, groups, replace(config, ids=tuple(range(parts)))) == 0
    except PipelineError:
        raise PipelineError(
            f"data.holdout_fraction={fraction} sets aside 1 of {parts} class-stratified parts, but the rarest class "
            f"or the groups that must stay together number fewer than {parts}; raise data.holdout_fraction or set it "
            "to 0"
        ) from None
