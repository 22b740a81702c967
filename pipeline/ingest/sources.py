"""Read access to a competition download, the same for a .zip and a folder.

`prepare` reads every file through :class:`CompetitionFiles`, and every refusal names a file as
:meth:`CompetitionFiles.where` spells it, so the message points at the file in the user's archive.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError
from pipeline.ingest.images import IMAGE_SUFFIXES

SUFFIX_LIST = " ".join(sorted(IMAGE_SUFFIXES))
SAMPLE_WORD = "submission"  # sample_submission.csv, example_submission.csv, sampleSubmission.csv
HEADER_BYTES = 1 << 16  # enough of a CSV to read its header line without loading a large table


class SourceError(PipelineError):
    """The competition files are not usable; the message names the file and the fix."""


# Names are handled as "/"-separated strings where every file is visited: PurePosixPath costs
# microseconds each, seconds over a 100k-image download.
def suffix_of(name: str | PurePosixPath) -> str:
    base = str(name).rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def is_image(name: str | PurePosixPath) -> bool:
    return suffix_of(name) in IMAGE_SUFFIXES


def is_csv(name: str | PurePosixPath) -> bool:
    return suffix_of(name) == ".csv"


def base_name(name: str) -> str:
    return name.rsplit("/", 1)[-1]


class CompetitionFiles:
    """The files of one competition, relative to its root folder.

    The root is the folder holding the sample submission; without one, the download's top folder
    (a .zip that wraps everything in one folder is unwrapped).
    """

    def __init__(self, source: str | Path, sample_name: str | None = None):
        self.source = Path(source)
        if not self.source.exists():
            raise SourceError(f"data.source {str(source)!r} does not exist; point it at a competition .zip or folder")
        self._zip = _open_zip(self.source) if self.source.is_file() else None
        entries = [n for n in self._entries() if not _is_system_entry(n)]
        self.prefix = _root_prefix(entries, sample_name)
        inside = [n[len(self.prefix) :] for n in entries if n.startswith(self.prefix) and len(n) > len(self.prefix)]
        self.names = sorted(n for n in inside if not n.endswith("/"))  # files
        self.folders = [n.rstrip("/") for n in inside if n.endswith("/")]
        self._columns: dict[str, list[str]] = {}

    def _entries(self) -> list[str]:
        if self._zip:
            return self._zip.namelist()
        # Folders end in "/", as a .zip's directory entries do: an empty class folder shows only that way.
        return [
            p.relative_to(self.source).as_posix() + ("/" if p.is_dir() else "")
            for p in self.source.rglob("*")
            if p.is_file() or p.is_dir()
        ]

    def reopen(self) -> None:
        """Open the .zip afresh, in a worker process: a handle inherited across fork shares its file offset,
        so two processes reading through it corrupt each other's reads."""
        if self._zip:
            self._zip = _open_zip(self.source)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}  # a ZipFile does not pickle; the receiver reopens it

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.source.is_file():
            self._zip = _open_zip(self.source)

    def read(self, name: str) -> bytes:
        full = self.prefix + name
        try:
            return self._zip.read(full) if self._zip else (self.source / full).read_bytes()
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            # A damaged member, or one this Python cannot unpack (Deflate64, encryption).
            raise SourceError(
                f"{self.where(name)}: cannot read it from the .zip ({error}); download the .zip again, "
                "or unzip it with another tool and point data.source at the folder"
            ) from error
        except OSError as error:
            raise SourceError(
                f"{self.where(name)}: cannot read the file ({error}); check it exists and is readable"
            ) from error

    def open_text(self, name: str) -> io.TextIOBase:
        """A CSV as text, streamed from the .zip rather than read whole (pixel tables run to hundreds of MB)."""
        if self._zip:
            return io.TextIOWrapper(self._zip.open(self.prefix + name), encoding="utf-8-sig", newline="")
        return open(self.source / self.prefix / name, encoding="utf-8-sig", newline="")

    def where(self, name: str) -> str:
        return f"{self.source}:{self.prefix}{name}" if self._zip else str(self.source / self.prefix / name)

    def has(self, name: str) -> bool:
        return name in self.names

    def files_under(self, folder: str) -> Iterator[PurePosixPath]:
        """Files under `folder` (a path inside the root, any depth), in name order."""
        prefix = folder.strip("/") + "/"
        for name in self.names:
            if name.startswith(prefix):
                yield PurePosixPath(name)

    def images_under(self, folder: str) -> Iterator[PurePosixPath]:
        return (path for path in self.files_under(folder) if is_image(path))

    def csvs(self) -> list[str]:
        return [n for n in self.names if is_csv(n)]

    def image_folders(self) -> Counter:
        """Top-level folder → number of images anywhere under it."""
        return Counter(n.split("/", 1)[0] for n in self.names if "/" in n and is_image(n))

    def csv_columns(self, name: str) -> list[str]:
        """The header of a CSV, read from its first bytes only."""
        if not self.has(name):
            raise SourceError(
                f"{self.where(name)}: no such file (a path inside the download, as listed here); {self.inventory()}"
            )
        if name not in self._columns:
            head = self._head(name).decode("utf-8-sig", errors="replace").splitlines()
            self._columns[name] = [column.strip() for column in next(csv.reader(head[:1]), [])]
        return self._columns[name]

    def _head(self, name: str) -> bytes:
        if self._zip:
            with self._zip.open(self.prefix + name) as handle:
                return handle.read(HEADER_BYTES)
        with open(self.source / self.prefix / name, "rb") as handle:
            return handle.read(HEADER_BYTES)

    def inventory(self) -> str:
        """What the download holds, for refusals: top-level folders with their image counts, CSVs with their columns."""
        folders = self.image_folders()
        top = sorted({n.split("/", 1)[0] for n in [*self.names, *self.folders] if "/" in n})
        folder_text = ", ".join(f"{f}/ ({folders.get(f, 0)} images)" for f in top) or "no folders"
        csv_text = "; ".join(f"{n} (columns {self.csv_columns(n)})" for n in self.csvs()[:8]) or "no CSV files"
        loose = sum(1 for n in self.names if "/" not in n and is_image(n))
        return f"found {folder_text}; {csv_text}" + (f"; {loose} images at the top level" if loose else "")


def find_sample(files: CompetitionFiles, name: str | None) -> str | None:
    """The sample submission's path inside the root: `name` when given, else the one *submission*.csv."""
    if name is not None:
        if not files.has(name):
            raise SourceError(f"{files.where(name)}: data.sample_submission names no file there; {files.inventory()}")
        return name
    candidates = [n for n in files.csvs() if SAMPLE_WORD in base_name(n).lower()]
    if len(candidates) > 1:
        raise SourceError(
            f"{files.where('')}: several sample submissions {candidates}; set data.sample_submission to the one to "
            "match"
        )
    return candidates[0] if candidates else None


def _root_prefix(entries: list[str], sample_name: str | None) -> str:
    files = [n for n in entries if not n.endswith("/")]
    if sample_name:
        samples = [n for n in files if n == sample_name or n.endswith("/" + sample_name)]
    else:
        samples = [n for n in files if is_csv(n) and SAMPLE_WORD in base_name(n).lower()]
    if samples:
        shallowest = min(samples, key=lambda n: (len(PurePosixPath(n).parts), n))
        root = (
            shallowest[: len(shallowest) - len(sample_name)]
            if sample_name
            else str(PurePosixPath(shallowest).parent) + "/"
        )
        return "" if root in ("", "./") else root
    prefix = ""
    while True:  # unwrap a top folder that holds everything
        below = {n[len(prefix) :].split("/")[0] for n in entries if n.startswith(prefix) and len(n) > len(prefix)}
        wraps = len(below) == 1 and any(n.startswith(prefix + next(iter(below)) + "/") for n in files)
        if not wraps:
            return prefix
        prefix += next(iter(below)) + "/"


def _is_system_entry(name: str) -> bool:
    """Hidden files and folders (.DS_Store, .ipynb_checkpoints/) and macOS zip metadata are never competition data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError(
            f"{source}: not a readable .zip ({error}); point data.source at the competition .zip "
            "(download it again if it is cut short) or at its unzipped folder"
        ) from error
