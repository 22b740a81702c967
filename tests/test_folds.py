import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.data import LABEL_FORM, Prepared, load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.groups import duplicate_groups, merge_groupings, pattern_groups, read_groups
from pipeline.evaluation.splits import assign_folds, fold_groups
from pipeline.stages import folds as folds_stage
from tests.conftest import folds_config, project_config

SUBJECT = r"^(S[0-9]+)_"
CLASSES = ["angry", "happy", "sad"]


def subject_data(subjects: int = 20, per_subject: int = 6, extra_names: tuple[str, ...] = ()) -> Prepared:
    """CK+-like train set: each subject's frames (S010_004_00000017.png) spread over every class folder."""
    labels, files = [], []
    for subject in range(subjects):
        for frame in range(per_subject):
            label = (subject + frame) % len(CLASSES)
            labels.append(label)
            files.append(f"train/{CLASSES[label]}/S{10 + subject:03d}_{frame % 2 + 1:03d}_{frame:08d}.png")
    for name in extra_names:
        labels.append(0)
        files.append(f"train/{CLASSES[0]}/{name}")
    n = len(files)
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)  # no two alike
    return Prepared(
        train_images=images,
        train_ids=np.array([f"{i:05d}" for i in range(n)]),
        train_labels=np.array(labels),
        train_files=np.array(files),
        test_images=images[:2],
        test_ids=np.array(["t0", "t1"]),
        classes=CLASSES,
        submission_labels=CLASSES,
        submission_form=LABEL_FORM,
        pixel_mean=0.0,
        pixel_std=1.0,
        fingerprint="test",
    )


def subjects_of(data: Prepared) -> np.ndarray:
    return np.array([f.rsplit("/", 1)[-1][:4] for f in data.train_files])


def test_identical_images_share_a_group_and_others_do_not():
    images = np.random.default_rng(0).integers(0, 255, (6, 4, 4), dtype=np.uint8)
    images[4] = images[1]
    groups = duplicate_groups(images)
    assert groups[4] == groups[1]
    assert len(set(groups)) == 5


def test_merge_groupings_joins_transitively():
    by_pixels = np.array([0, 0, 1, 2, 3])
    by_subject = np.array([5, 6, 6, 7, 7])  # 0~1 by pixels, 1~2 and 3~4 by subject
    merged = merge_groupings(by_pixels, by_subject)
    assert merged[0] == merged[1] == merged[2] != merged[3] == merged[4]


def test_folds_cover_every_image_once_keep_duplicates_and_balance_classes(prepared):
    data = load_prepared(prepared)
    groups = duplicate_groups(data.train_images)
    fold = assign_folds(data.train_labels, groups, folds_config(ids=(0, 1, 2), seed=7))
    assert set(fold) == {0, 1, 2}
    for group in np.unique(groups):
        assert len(set(fold[groups == group])) == 1
    for label in np.unique(data.train_labels):
        counts = np.bincount(fold[data.train_labels == label], minlength=3)
        assert counts.max() - counts.min() <= 2 + 1  # a duplicate pair may tip one fold


def test_same_seed_same_folds_other_seed_other_folds(prepared):
    data = load_prepared(prepared)
    groups = duplicate_groups(data.train_images)
    a = assign_folds(data.train_labels, groups, folds_config(ids=(0, 1, 2), seed=1))
    b = assign_folds(data.train_labels, groups, folds_config(ids=(0, 1, 2), seed=1))
    c = assign_folds(data.train_labels, groups, folds_config(ids=(0, 1, 2), seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_too_few_images_of_a_class_for_k_folds():
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="rarest class has 2 images"):
        assign_folds(labels, np.arange(12), folds_config(ids=(0, 1, 2)))


def test_groups_file_must_cover_every_id(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("id,group\na,1\n")
    with pytest.raises(ValueError, match="have no group"):
        read_groups(path, np.array(["a", "b"]))
    path.write_text("id,subject\na,1\n")
    with pytest.raises(ValueError, match="needs columns id,group"):
        read_groups(path, np.array(["a"]))


def test_name_pattern_keeps_every_subject_in_one_fold_and_folds_says_how_many_groups(tmp_path, monkeypatch, capsys):
    data = subject_data()
    config = dataclasses.replace(project_config(), folds=folds_config(ids=(0, 1, 2), group_pattern=SUBJECT))
    monkeypatch.setattr(folds_stage, "load_prepared", lambda folder: data)
    monkeypatch.setattr(folds_stage, "load_config", lambda path: config)
    folds_stage.main(["--data", "unused", "--out", str(tmp_path / "folds.csv")])
    written = pd.read_csv(tmp_path / "folds.csv", dtype={"id": str})
    subject = subjects_of(data)
    assert written.groupby(subject)["fold"].nunique().max() == 1
    assert written.groupby(subject)["group"].nunique().max() == 1 and written["group"].nunique() == 20
    assert set(written["fold"]) == {0, 1, 2}
    assert (
        "20 groups from folds.group_pattern (mean 6.0 images each); 0 repeated images kept with their twins"
        in capsys.readouterr().out
    )


def test_without_a_name_pattern_subjects_are_split():
    """The control for the test above: these subjects do not land in one fold by chance."""
    data = subject_data()
    groups, notes = fold_groups(
        data.train_files,
        data.train_ids,
        data.train_images,
        folds_config(ids=(0, 1, 2), group_pattern=None, groups_csv=None),
    )
    fold = assign_folds(data.train_labels, groups, folds_config(ids=(0, 1, 2)))
    assert pd.Series(fold).groupby(subjects_of(data)).nunique().max() > 1
    assert notes == ["0 repeated images kept with their twins"]


def test_name_pattern_merges_with_pixel_twins_and_groups_file(tmp_path):
    data = subject_data(subjects=4, per_subject=3)
    data.train_images[0] = data.train_images[3]  # a pixel twin ties S010 to S011
    groups_file = tmp_path / "groups.csv"
    pd.DataFrame({"id": data.train_ids, "group": ["a"] * 6 + ["b"] * 3 + ["c"] * 3}).to_csv(groups_file, index=False)
    groups, notes = fold_groups(
        data.train_files,
        data.train_ids,
        data.train_images,
        folds_config(group_pattern=SUBJECT, groups_csv=str(groups_file)),
    )
    assert len(set(groups[:6])) == 1 and len(set(groups)) == 3  # S010+S011 by pixels, S012, S013
    assert notes == [
        "4 groups from folds.group_pattern (mean 3.0 images each)",
        "3 groups from folds.groups_csv (mean 4.0 images each)",
        "1 repeated images kept with their twins",
    ]


def test_name_pattern_reads_the_file_name_not_its_folder():
    files = np.array(["train/happy/S010_1.png", "train_images/S011_2.jpg", "S010_3.png"])
    groups = pattern_groups(files, SUBJECT)
    assert groups[0] == groups[2] != groups[1]


def test_a_name_the_pattern_does_not_match_is_refused_naming_it_and_the_key():
    data = subject_data(extra_names=("neutral_face.png",))
    with pytest.raises(PipelineError) as error:
        fold_groups(data.train_files, data.train_ids, data.train_images, folds_config(group_pattern=SUBJECT))
    message = str(error.value)
    assert "1 of 121 train file names" in message and "'neutral_face.png'" in message
    assert "folds.group_pattern" in message and repr(SUBJECT) in message and "optional" in message


def test_a_pattern_whose_group_matches_nothing_is_refused():
    with pytest.raises(PipelineError, match=r"empty group key in 2 of 2 .*'S010_1.png'"):
        pattern_groups(np.array(["train/a/S010_1.png", "train/b/S011_1.png"]), r"([0-9]*)")
    with pytest.raises(
        PipelineError, match=r"no group key in 1 of 2 .*'_1.png'"
    ):  # an optional group that took no part
        pattern_groups(np.array(["S010_1.png", "_1.png"]), r"^(S[0-9]+)?_")


def test_fewer_groups_than_folds_is_refused():
    with pytest.raises(PipelineError, match="form 2 groups .* fewer than K=3"):
        assign_folds(np.array([0, 1] * 6), np.array([0] * 6 + [1] * 6), folds_config(ids=(0, 1, 2)))
