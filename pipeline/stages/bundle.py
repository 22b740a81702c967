"""Stage `bundle`: the ensemble the submission used, as ONNX files that need no workspace.

Reads ensemble/weights.json (which backbones the blend kept, with what weight, and the cuts or thresholds that
decided the submitted labels), every kept backbone's fold models in models/ and the prepared data's classes and
pixel statistics; writes bundle/ensemble.onnx, bundle/fast.onnx and bundle/bundle.json (see
pipeline/runtime/bundle_format.py), with the OOF accuracy each can expect (fast: from the backbones' OOF tables
without TTA). fast.onnx holds one fold model of each kept member, or, when a student (`distill.students`) scores
higher that way on OOF, one fold model of that student alone: the ensemble's knowledge at one model's cost.
Before writing, it runs ensemble.onnx on onnxruntime over the prepared test images and checks that
it gives the kept backbones' test probabilities (test_predictions/) blended by their weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data import Prepared, label_cells, load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.blend import blend
from pipeline.evaluation.predictions import read_oof_table, read_target_values, read_test_table
from pipeline.files import atomic_dir, read_json, write_json
from pipeline.graphs.ensemble_net import EnsembleNet, bundle_info, bundle_opset, export_onnx, load_member
from pipeline.runtime.bundle_format import FAST, FULL, BundleInfo, Member, decided_label
from pipeline.runtime.classifier import Classifier

# The bundle must give the submission's labels; a few rows may flip where training ran under
# bf16/fp16 autocast, since the bundle computes in fp32.
REQUIRED_AGREEMENT = 0.99
# A row whose two likeliest classes are closer than this is a tie that rounding decides either way (an
# undertrained model's near-uniform rows): it is counted apart, not as a disagreement.
NEAR_TIE = 1e-3


def fast_accuracy(oof_dir: Path, info: BundleInfo, data: Prepared) -> float:
    """OOF accuracy of what fast.onnx does: one fold model per member, no test-time views, blended, each image's
    label decided as the bundle decides it (bundle_format.decided_label: cuts, thresholds).

    The members' no-TTA OOF tables hold exactly that for every train image (each row by the one fold
    model that did not train on it), so this is as honest as the ensemble's own OOF figure.
    """
    paths = [oof_dir / f"{m.name}.no_tta.csv" for m in info.members]
    tables = [read_oof_table(path, data.classes, data.train_ids, data.multi_label) for path in paths]
    weights = np.array([m.weight for m in info.members])
    probs = blend([probs for probs, _, _ in tables], weights)
    values = blend([read_target_values(path, data.target_names, data.train_ids) for path in paths], weights)
    decided = [decided_label(row, info) for row in np.hstack([probs, values])]
    return float(np.mean(np.array(decided) == label_cells(tables[0][1], data.classes)))


def fastest_choice(
    oof_dir: Path, info: BundleInfo, students: dict[str, tuple[Member, list]], data: Prepared
) -> tuple[BundleInfo, list[list], dict[str, float]]:
    """What fast.onnx holds: the kept members' first fold models, or the student whose first fold model alone
    scores a higher OOF accuracy the fast way; returns its info, models per member, and every candidate's accuracy."""
    candidates = {"members": (dataclasses.replace(info, fast=True), None)}
    for name, (member, models) in students.items():
        alone = dataclasses.replace(member, weight=1.0)
        candidates[name] = (dataclasses.replace(info, members=(alone,), fast=True), [models[:1]])
    accuracy = {name: fast_accuracy(oof_dir, candidate, data) for name, (candidate, _) in candidates.items()}
    best = max(accuracy, key=lambda name: (accuracy[name], name == "members"))  # a tie keeps the members
    chosen, models = candidates[best]
    return chosen, models, accuracy


def blended_test(test_dir: Path, members: tuple[Member, ...], data: Prepared) -> np.ndarray:
    """The members' test probabilities blended by their weights: what the full graph computes. (ensemble/test.csv may
    hold what was submitted instead: tempered, ranks, cut grades, probabilities shifted to thresholds.)"""
    tables = [read_test_table(test_dir / f"{m.name}.csv", data.classes, data.test_ids) for m in members]
    return blend(tables, np.array([m.weight for m in members]))


def decided_rows(probabilities: np.ndarray) -> np.ndarray:
    """Which rows are not near ties: their likeliest class leads the next by more than NEAR_TIE."""
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities), bool)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0] > NEAR_TIE


def label_agreement(got: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """The share of rows where `got` picks `expected`'s likeliest class, over the rows that are not near ties in
    `expected`, and how many near ties were set apart."""
    decided = decided_rows(expected)
    same = got.argmax(1) == expected.argmax(1)
    return float(same[decided].mean()) if decided.any() else 1.0, int((~decided).sum())


def check_against_submission(onnx_path: Path, data: Prepared, expected: np.ndarray) -> dict:
    got = Classifier(onnx_path).probabilities(data.test_images)
    agreement, near_ties = label_agreement(got, expected)
    difference = float(np.abs(got - expected).max())
    if agreement < REQUIRED_AGREEMENT:
        raise PipelineError(
            f"{onnx_path} gives the submission's label on only {agreement:.2%} of the test images that are not "
            f"near ties ({near_ties} set apart; max probability difference {difference:.2e}); "
            "re-run `dvc repro --downstream oof`"
        )
    return {
        "test_label_agreement": agreement,
        "test_near_ties": near_ties,
        "test_max_probability_difference": difference,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline bundle", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="folder of train outputs (models/)")
    parser.add_argument("--ensemble", type=Path, required=True, help="folder with weights.json and test.csv")
    parser.add_argument("--scores", type=Path, required=True, help="the ensemble's metrics (metrics/ensemble.json)")
    parser.add_argument("--oof", type=Path, required=True, help="folder of the backbones' OOF tables (oof/)")
    parser.add_argument(
        "--test", type=Path, required=True, help="folder of the backbones' test probabilities (test_predictions/)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.params)
    folds = config.folds.ids
    data = load_prepared(args.data)
    decision = read_json(args.ensemble / "weights.json")
    blend = decision["weights"]
    kept = [
        load_member(args.models, name, weight, folds, data, config.tta.of(name))
        for name, weight in blend.items()
        if weight > 0
    ]
    members = tuple(member for member, _ in kept)
    info = bundle_info(data, members, {}, decision)
    students = {
        name: load_member(args.models, name, 1.0, folds[:1], data, config.tta.of(name))
        for name in config.distill.students
    }
    fast_info, fast_models, fast_candidates = fastest_choice(args.oof, info, students, data)
    fast_models = fast_models or [models[:1] for _, models in kept]
    provenance = {
        "oof_accuracy": read_json(args.scores)["accuracy"],
        "oof_accuracy_fast": max(fast_candidates.values()),
        "fast": [m.name for m in fast_info.members],
        "oof_accuracy_fast_candidates": fast_candidates,
        "source": read_json(args.data / "meta.json")["source"],
        "data_fingerprint": data.fingerprint,
    }
    info = dataclasses.replace(info, provenance=provenance)
    fast_info = dataclasses.replace(fast_info, provenance=provenance)
    with atomic_dir(args.out) as tmp:
        export_onnx(EnsembleNet(info, [models for _, models in kept]), str(tmp / FULL), bundle_opset(info))
        export_onnx(EnsembleNet(fast_info, fast_models), str(tmp / FAST), bundle_opset(fast_info))
        check = check_against_submission(tmp / FULL, data, blended_test(args.test, members, data))
        sizes = {name: round((tmp / name).stat().st_size / 2**20, 1) for name in (FULL, FAST)}
        write_json({**json.loads(info.to_json()), "check": check, "size_mb": sizes}, tmp / "bundle.json")
    print(
        f"bundle: {', '.join(f'{m.name}×{len(m.folds)} ({m.weight:.2f})' for m in members)} → {args.out}/{FULL} "
        f"({sizes[FULL]} MB, "
        f"OOF {provenance['oof_accuracy']:.4f}), {FAST} ({' + '.join(provenance['fast'])}, {sizes[FAST]} MB, "
        f"OOF {provenance['oof_accuracy_fast']:.4f}); "
        f"same label as the submission on {check['test_label_agreement']:.2%} of the test images, "
        f"max probability difference {check['test_max_probability_difference']:.1e}"
    )
