"""`prepare` and `folds` on the real FER-2013 archive, when ../shared/data/fer2013.zip is present."""

import numpy as np
import pandas as pd
import pytest

from pipeline.data import load_prepared
from pipeline.evaluation.groups import duplicate_groups
from pipeline.evaluation.splits import assign_folds
from pipeline.stages.prepare import prepare
from tests.conftest import FER2013, data_config, folds_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FER2013.exists(), reason=f"{FER2013} not present")]


@pytest.fixture(scope="module")
def fer(tmp_path_factory):
    out = tmp_path_factory.mktemp("fer") / "prepared"
    prepare(FER2013, data_config(), out)
    return load_prepared(out)


def test_counts_classes_and_test_order(fer):
    assert fer.train_images.shape == (28709, 48, 48)
    assert fer.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert np.bincount(fer.train_labels).tolist() == [3995, 436, 4097, 7215, 4965, 4830, 3171]
    assert fer.test_images.shape == (7178, 48, 48)
    assert list(fer.test_ids[:3]) == ["00000", "00001", "00002"]  # ids keep their leading zeros


def test_folds_keep_the_repeated_faces_together(fer):
    groups = duplicate_groups(fer.train_images)
    repeated = pd.Series(groups).duplicated(keep=False).to_numpy()
    assert 1000 < repeated.sum() < 3000  # about 1,800 FER-2013 train images have a pixel-identical twin
    fold = assign_folds(fer.train_labels, groups, folds_config(ids=(0, 1, 2, 3, 4)))
    assert pd.DataFrame({"g": groups, "f": fold})[repeated].groupby("g")["f"].nunique().max() == 1
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() < 0.01 * len(fold)
