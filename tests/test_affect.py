"""Valence and arousal as regression targets: the masked loss, reading them in `prepare`, and a
multi-task head that learns them."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data import load_prepared
from pipeline.evaluation.affect import ccc, rmse, target_scores
from pipeline.evaluation.predictions import probability_table, read_target_values, with_targets
from pipeline.ingest.synthetic import TARGETS
from pipeline.stages.prepare import SourceError, prepare
from pipeline.stages.synthesize import AFFECT_FILE, write_competition
from pipeline.training import models
from pipeline.training.augment import Normalizer
from pipeline.training.fold_run import fit_fold
from pipeline.training.models import create_model
from pipeline.training.step import BatchMixup, TrainStep, seed_everything
from pipeline.training.target_loss import mix_targets, split_outputs, target_loss
from tests.conftest import data_config, synthetic_config, train_config
from tests.layouts import as_label_table

CONFIG = train_config(model="resnet10t", epochs=1, batch_size=16, lr=0.003, warmup_epochs=0, workers=0, augment=())


def truth_by_prepared_id(competition: Path) -> pd.DataFrame:
    """valence, arousal (NaN where not annotated) of each train image, indexed by its prepared id <class>/<stem>."""
    affect = pd.read_csv(competition / "competition" / AFFECT_FILE, dtype={"id": str})
    affect.index = affect["id"].str.removeprefix("train/").str.removesuffix(".png")
    return affect[list(TARGETS)].replace(-2.0, np.nan)


def test_split_outputs_keeps_the_logits_and_squashes_the_targets():
    outputs = torch.tensor([[1.0, 2.0, 3.0, 10.0, -10.0]])
    logits, values = split_outputs(outputs, 3)
    assert torch.equal(logits, outputs[:, :3])
    assert values.shape == (1, 2) and -1 <= values.min() and values.max() <= 1


def test_a_batch_without_target_values_trains_on_the_cross_entropy_alone():
    seed_everything(0)
    model = create_model(CONFIG, in_chans=1, num_classes=3 + 2).eval()  # eval: batch norm adds no batch noise
    normalize = Normalizer(0.4, 0.2, None, torch.device("cpu"), False)
    images = torch.randint(0, 255, (8, 16, 16), dtype=torch.uint8)
    labels = torch.arange(8) % 3
    with torch.no_grad():
        logits, _ = split_outputs(model(normalize(images)), 3)
        cross_entropy = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=CONFIG.label_smoothing)
    step = TrainStep(model, CONFIG, normalize, num_classes=3, steps_per_epoch=1, num_targets=2)
    loss = step(images, labels, torch.full((8, 2), float("nan")))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(cross_entropy.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["mse", "ccc", "mse+ccc"])
def test_missing_values_get_no_gradient_and_an_empty_batch_adds_nothing(kind):
    values = torch.tensor([[0.2, -0.1], [0.5, 0.3], [-0.4, 0.0], [0.1, 0.9]], requires_grad=True)
    targets = torch.tensor([[0.3, float("nan")], [float("nan"), 0.2], [-0.5, 0.1], [0.0, float("nan")]])
    loss = target_loss(values, targets, kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(values.grad).all()
    assert (values.grad[torch.isnan(targets)] == 0).all()
    assert (values.grad[~torch.isnan(targets)] != 0).any()
    assert target_loss(values, torch.full_like(targets, float("nan")), kind).item() == 0.0


def test_numpy_scores_skip_missing_rows():
    true = np.array([0.1, np.nan, -0.5, 0.7, 0.2])
    assert rmse(true.copy(), true) == 0 and ccc(true.copy(), true) == pytest.approx(1.0)
    assert ccc(np.full(5, 0.3), true) == pytest.approx(0.0)
    scores = target_scores(np.stack([true, -true], 1), np.stack([true, true], 1), ["valence", "arousal"])
    assert scores["valence"]["n"] == 4 and scores["arousal"]["ccc"] < 0
    low, high = scores["arousal"]["rmse_ci"]
    assert low <= scores["arousal"]["rmse"] <= high


def test_prepare_reads_the_class_folder_csv_of_the_synthetic_competition(competition, prepared):
    data = load_prepared(prepared)
    assert data.target_names == list(TARGETS)
    assert data.train_targets.dtype == np.float32 and data.train_targets.shape == (len(data.train_ids), len(TARGETS))
    truth = truth_by_prepared_id(competition).loc[data.train_ids].to_numpy(np.float32)
    np.testing.assert_array_equal(data.train_targets, truth)  # NaN where the CSV says -2
    assert np.isnan(data.train_targets).any() and np.nanmax(np.abs(data.train_targets)) <= 1


def test_prepare_reads_targets_from_a_label_table_beside_an_unusual_label_column(competition, tmp_path):
    comp = tmp_path / "label_table"
    as_label_table(competition / "competition", comp)
    truth = truth_by_prepared_id(competition)
    truth.index = truth.index.str.split("/").str[1]  # the label table names images by stem
    table = pd.read_csv(comp / "train.csv", dtype=str).rename(columns={"label": "mood"})
    table[list(TARGETS)] = truth.loc[table["image_id"]].fillna(-2).to_numpy()
    table.to_csv(comp / "train.csv", index=False)
    prepare(comp, data_config(), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.target_names == list(TARGETS) and len(data.classes) == 7  # `mood`, not a target, is the label
    np.testing.assert_array_equal(data.train_targets, truth.loc[data.train_ids].to_numpy(np.float32))


def test_a_value_out_of_range_is_refused_naming_file_column_and_line(competition, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    affect = pd.read_csv(comp / AFFECT_FILE, dtype=str)
    affect.loc[2, "arousal"] = "1.5"
    affect.to_csv(comp / AFFECT_FILE, index=False)
    with pytest.raises(SourceError, match=rf"{AFFECT_FILE}: line 4: arousal '1.5' is outside \[-1, 1\]"):
        prepare(comp, data_config(), tmp_path / "out")


def test_a_csv_with_only_some_of_the_targets_is_refused_naming_the_missing_one(competition, tmp_path):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    pd.read_csv(comp / AFFECT_FILE, dtype=str).drop(columns="arousal").to_csv(comp / AFFECT_FILE, index=False)
    with pytest.raises(SourceError, match=r"not \['arousal'\].*data.targets"):
        prepare(comp, data_config(), tmp_path / "out")


def test_a_competition_without_targets_trains_a_model_of_one_output_per_class(competition, tmp_path, monkeypatch):
    comp = Path(shutil.copytree(competition / "competition", tmp_path / "comp"))
    (comp / AFFECT_FILE).unlink()
    prepare(comp, data_config(), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert (
        data.target_names == [] and data.train_targets is None and not (tmp_path / "out" / "train_targets.npy").exists()
    )
    built = []
    monkeypatch.setattr(models, "create_model", lambda *args: built.append(args[2]) or create_model(*args))
    run = fit_fold(data, np.arange(len(data.train_ids)) % 2, 0, CONFIG)
    assert built == [len(data.classes)] and run.oof_plain_values.shape == (len(run.valid_index), 0)
    table = with_targets(
        probability_table(data.train_ids[run.valid_index], run.oof_plain, data.classes),
        run.oof_plain_values,
        data.target_names,
    )
    assert list(table.columns) == ["id", *data.classes]


def test_target_columns_round_trip_through_the_prediction_tables(tmp_path):
    ids = np.array(["a", "b", "c"])
    values = np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]])
    table = with_targets(probability_table(ids, np.full((3, 2), 0.5), ["x", "y"]), values, list(TARGETS))
    table.to_csv(tmp_path / "t.csv", index=False)
    assert list(table.columns) == ["id", "x", "y", *TARGETS]
    np.testing.assert_allclose(read_target_values(tmp_path / "t.csv", list(TARGETS), ids[::-1]), values[::-1])


@pytest.fixture(scope="module")
def affect_data(tmp_path_factory) -> Path:
    """An easy synthetic competition at 32 pixels, prepared: a few hundred faces with valence and arousal."""
    root = tmp_path_factory.mktemp("affect")
    config = synthetic_config(
        seed=5, train_per_class=45, test_size=8, spread=0.3, label_noise=0.0, duplicate_fraction=0.0
    )
    write_competition(config, root / "synthetic")
    prepare(root / "synthetic" / "competition", data_config(image_size=32), root / "prepared")
    return root / "prepared"


def test_the_multitask_head_learns_valence_better_than_a_constant(affect_data):
    data = load_prepared(affect_data)
    fold_of = np.arange(len(data.train_ids)) % 4
    # timm's smallest ResNet, unaugmented: a minute's training on two cores is enough for it to learn
    config = train_config(
        model="test_resnet", epochs=10, batch_size=16, lr=0.004, warmup_epochs=0, workers=0, eval_every=10, augment=()
    )
    run = fit_fold(data, fold_of, 0, config)
    held_out = data.train_targets[run.valid_index]
    predicted = run.oof_plain_values
    valence = TARGETS.index("valence")
    train_mean = np.nanmean(data.train_targets[fold_of != 0, valence])
    assert ccc(predicted[:, valence], held_out[:, valence]) > 0.5
    assert rmse(predicted[:, valence], held_out[:, valence]) < rmse(
        np.full(len(held_out), train_mean), held_out[:, valence]
    )


def test_mixup_mixes_the_targets_with_the_weight_it_mixed_the_images_with():
    mixup = BatchMixup(mixup_alpha=0.4, cutmix_alpha=0.0, num_classes=3)
    images = torch.arange(4 * 2, dtype=torch.float32).reshape(4, 1, 1, 2)
    mixed, _ = mixup(images.clone(), torch.tensor([0, 1, 2, 0]))
    lam = mixup.last_lam
    assert lam < 1 and torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0))
    targets = torch.tensor([[0.5, float("nan")], [0.1, 0.2], [-0.3, 0.4], [0.9, -0.9]])
    mixed_targets = mix_targets(targets, lam)
    assert mixed_targets[1, 0] == pytest.approx(lam * 0.1 + (1 - lam) * -0.3)
    assert torch.isnan(mixed_targets[0, 1]) and torch.isnan(mixed_targets[3, 1])  # mixed with a missing value
