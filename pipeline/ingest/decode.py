"""Decoding a competition's images, once, into uint8 arrays on disk.

Images are decoded in chunks by worker processes on all available cores, each writing its rows
straight into the memory-mapped .npy file, so a set larger than memory is never held in it, and
never twice. Files are read through CompetitionFiles; pixel-table rows are parsed from their text.
With data.face_crop, each picture is first cropped to its largest face (pipeline/ingest/face_crop.py), by
one detector per worker.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.ingest.face_crop import FaceCropper
from pipeline.ingest.images import to_model_input
from pipeline.ingest.pixel_table import parse_pixels
from pipeline.ingest.sources import CompetitionFiles, SourceError
from pipeline.machine import available_cores

SUPPORTED_MODES = {"L", "RGB", "P", "LA", "RGBA"}  # what converts to gray/RGB without guessing
CHUNK = 256  # images per task: large enough that process overhead is small, small enough for a smooth progress bar


def read_picture(data: bytes, where: str) -> Image.Image:
    """One image file, decoded."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as error:
        width, height = _pixel_size(data)
        raise SourceError(
            f"{where}: image is {width}×{height} pixels, more than Pillow decodes "
            f"({2 * Image.MAX_IMAGE_PIXELS} pixels at most); shrink the image or remove it"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # Pillow reports a damaged header or a truncated file with any of these, depending on the format.
        raise SourceError(f"{where}: cannot decode image ({error}); replace or delete the file") from error
    if image.mode not in SUPPORTED_MODES:
        raise SourceError(
            f"{where}: image mode {image.mode!r} is not supported (expected one of {sorted(SUPPORTED_MODES)}); convert "
            "it to 8-bit grayscale or RGB"
        )
    return image


def _pixel_size(data: bytes) -> tuple[int, int]:
    """Width and height of an image Image.open refuses as too large: its header, read with the limit lifted."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_pixel_row(text: str, where: str) -> np.ndarray:
    try:
        return parse_pixels(text, where)
    except SourceError:
        raise
    except ValueError as error:  # numpy's parser meeting text that is not a number
        raise SourceError(
            f"{where}: pixels must be whole numbers separated by spaces ({error}); fix or remove the row"
        ) from error


class _Decoder:
    """What a worker needs, sent once per process rather than with every chunk."""

    files: CompetitionFiles | None = None
    size = 0
    channels = 1
    cropper: FaceCropper | None = None


def _start_worker(files: CompetitionFiles, size: int, channels: int, face_crop: bool, *, reopen: bool = True) -> None:
    if reopen:
        files.reopen()
    _Decoder.files, _Decoder.size, _Decoder.channels = files, size, channels
    _Decoder.cropper = FaceCropper() if face_crop else None


def _model_input(picture: Image.Image | np.ndarray) -> tuple[np.ndarray, bool]:
    """A decoded picture → the model's uint8 array, and whether a face was found in it (True without face crops)."""
    shape = (_Decoder.size, _Decoder.size) + ((_Decoder.channels,) if _Decoder.channels > 1 else ())
    if _Decoder.cropper is None and isinstance(picture, np.ndarray) and picture.shape == shape:
        return picture, True
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    found = True
    if _Decoder.cropper is not None:
        picture, found = _Decoder.cropper(picture)
    return to_model_input(picture, _Decoder.size, _Decoder.channels), found


def _decode_chunk(target: str, start: int, sources: list[str], pixels: list[str] | None) -> np.ndarray:
    """Decode one chunk into rows start.. of `target`; returns whether a face was found in each picture."""
    out = np.load(target, mmap_mode="r+")
    found = np.ones(len(sources), bool)
    for i, source in enumerate(sources):
        where = _Decoder.files.where(source)
        if pixels is not None:
            picture = read_pixel_row(pixels[i], where)
        else:
            picture = read_picture(_Decoder.files.read(source), where)
        out[start + i], found[i] = _model_input(picture)
    out.flush()
    return found


def decode_rows(
    files: CompetitionFiles, rows: pd.DataFrame, size: int, channels: int, target: Path, what: str, face_crop: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `rows` (file, and pixels for a pixel table) into a new .npy at `target`, each picture cropped to its
    largest face with `face_crop`. Returns the array memory-mapped, and whether a face was found in each picture."""
    shape = (len(rows), size, size) + ((channels,) if channels > 1 else ())
    np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=shape).flush()
    sources = rows["file"].tolist()
    pixels = rows["pixels"].tolist() if "pixels" in rows else None
    chunks = [
        (start, sources[start : start + CHUNK], pixels[start : start + CHUNK] if pixels else None)
        for start in range(0, len(rows), CHUNK)
    ]
    # A pixel row parses in about 40 µs, less than sending its text to a worker costs: parse those here.
    workers = 1 if pixels else min(available_cores(), len(chunks))
    found: list[np.ndarray] = []
    with tqdm(total=len(rows), desc=f"prepare: decoding {what}", unit="img", disable=None, mininterval=1) as progress:
        if workers <= 1:
            _start_worker(files, size, channels, face_crop, reopen=False)
            for start, chunk, chunk_pixels in chunks:
                found.append(_decode_chunk(str(target), start, chunk, chunk_pixels))
                progress.update(len(chunk))
        else:
            with ProcessPoolExecutor(
                workers, initializer=_start_worker, initargs=(files, size, channels, face_crop)
            ) as pool:
                jobs = [pool.submit(_decode_chunk, str(target), *chunk) for chunk in chunks]
                try:
                    for job in jobs:  # in order, so the error raised is the first bad image's, as decoded one by one
                        found.append(job.result())
                        progress.update(len(found[-1]))
                except BrokenProcessPool as error:
                    raise SourceError(
                        f"prepare: a decoding worker died ({error}), most likely out of memory; decode with "
                        "fewer processes (run under `taskset -c 0`) or free memory"
                    ) from error
                except BaseException:
                    for job in jobs:
                        job.cancel()
                    raise
    return np.load(target, mmap_mode="r"), np.concatenate(found) if found else np.ones(0, bool)
