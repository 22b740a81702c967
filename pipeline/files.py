"""Atomic output writing: every file appears complete or not at all.

Each writer puts the bytes in a temporary file beside the target and renames it into place, so an
interrupted stage never leaves a truncated file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

BYTES_PER_READ = 1 << 23  # of an image array hashed or summed at once: bounded memory for memory-mapped sets


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces `target` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | Path, option: str) -> None:
    """Refuse an output that cannot be written, before the work whose result it would hold: its folder is made
    (as the atomic writers would) and a file is created there and removed."""
    path = Path(path)
    blocking = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)
    if path.is_dir():
        reason = f"{path} is a folder"
    elif blocking is not None:
        reason = f"{blocking} is a file, not a folder"
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
            os.close(fd)
            os.unlink(probe)
            return
        except PermissionError as error:
            reason = "the folder is read-only for this user" if path.parent.is_dir() else error.strerror
        except OSError as error:
            reason = error.strerror or str(error)
    raise PipelineError(f"{option} {path}: cannot write there ({reason}); give a path in a writable folder")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(data: Any, path: str | Path) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_array(array: np.ndarray, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash, stored beside outputs to say which data made them."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        for chunk in _row_chunks(array):  # a memory-mapped array is read a slice at a time
            digest.update(np.ascontiguousarray(chunk).data)
    return digest.hexdigest()[:16]


def _row_chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    rows = max(1, BYTES_PER_READ // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        yield array[start : start + rows]


def pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all pixels, scaled to [0, 1], read a slice at a time."""
    total, squares, count = 0, 0, 0
    for chunk in _row_chunks(images):
        # Exact integer sums: no float rounding however large the set.
        values = np.asarray(chunk, dtype=np.int64)
        total, squares, count = total + int(values.sum()), squares + int(np.square(values).sum()), count + values.size
    mean = total / count
    return mean / 255, max(squares / count - mean * mean, 0.0) ** 0.5 / 255
