import numpy as np
import pytest

from tests.conftest import folds_config
from pipeline.data import load_prepared
from pipeline.groups import duplicate_groups, merge_groupings, read_groups
from pipeline.stages.folds import assign_folds


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
