import numpy as np
import pandas as pd
import pytest

from pipeline.files import atomic_dir, atomic_path, fingerprint, write_csv


def test_interrupted_write_leaves_neither_target_nor_temp(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_folder_keeps_the_previous_complete_one(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("complete")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_write_csv_round_trips(tmp_path):
    frame = pd.DataFrame({"id": ["007", "008"], "x": [1.5, 2.0]})
    write_csv(frame, tmp_path / "sub" / "t.csv")
    back = pd.read_csv(tmp_path / "sub" / "t.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(frame, back)


def test_fingerprint_changes_with_content():
    a = np.zeros((2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    assert fingerprint(a) == fingerprint(a.copy()) != fingerprint(b)
