"""The kaggle package's API, behind errors a user can act on.

Credentials are found where the kaggle client looks for them (an access token, KAGGLE_USERNAME and
KAGGLE_KEY, kaggle.json) and are never printed: messages name where they came from, not what they are.
The kaggle package reads its settings when it is first imported, so it is imported only here, late.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from pipeline.config import ConfigError, PipelineError

log = logging.getLogger(__name__)

HOW_TO_AUTHENTICATE = (
    "create an API token at https://www.kaggle.com/settings (section API) and either save the downloaded "
    "kaggle.json as ~/.kaggle/kaggle.json (chmod 600), set KAGGLE_USERNAME and KAGGLE_KEY, or set KAGGLE_API_TOKEN"
)

KAGGLE_FOLDER = PurePosixPath("data/kaggle")
SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")


class KaggleError(PipelineError):
    """A Kaggle call that failed; the message says what to do."""


@dataclass(frozen=True)
class Submission:
    ref: int
    date: str
    file_name: str
    description: str
    status: str  # PENDING | COMPLETE | ERROR
    public_score: str | None
    private_score: str | None
    error: str | None


def competition_slug(source: str) -> str | None:
    """The competition named by `data.source`, or None for a local source."""
    if source.startswith("kaggle:"):
        slug = source.removeprefix("kaggle:")
        raise ConfigError(f"data.source {source!r}: write it as {KAGGLE_FOLDER}/{slug}.zip; "
                          "the download stage saves the competition there and DVC tracks it as a file")
    path = PurePosixPath(source)
    if path.parent != KAGGLE_FOLDER:
        return None
    if path.suffix != ".zip" or not SLUG.fullmatch(path.stem):
        raise ConfigError(f"data.source {source!r}: a Kaggle source is {KAGGLE_FOLDER}/<competition>.zip, "
                          "where <competition> is the name in the competition's URL, e.g. data/kaggle/digit-recognizer.zip")
    return path.stem


def config_dir() -> Path:
    """Where the kaggle client reads kaggle.json (its own rule: $KAGGLE_CONFIG_DIR, ~/.kaggle, then XDG)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists() or not sys.platform.startswith("linux"):
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def credential_source() -> str | None:
    """Where the kaggle client will take credentials from, or None when there are none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "$KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        token = Path.home() / ".kaggle" / name
        if token.is_file() and token.read_text().strip():
            return str(token)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "$KAGGLE_USERNAME/$KAGGLE_KEY"
    key_file = config_dir() / "kaggle.json"
    if key_file.is_file():
        warn_if_readable_by_others(key_file)
        return str(key_file)
    if (Path.home() / ".kaggle" / "credentials.json").is_file():  # written by `kaggle auth login`
        return str(Path.home() / ".kaggle" / "credentials.json")
    return None


def warn_if_readable_by_others(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users of this machine; run `chmod 600 %s`", path, path)


def connect() -> Kaggle:
    """An authenticated connection, or a KaggleError saying how to set credentials."""
    source = credential_source()
    if source is None:
        raise KaggleError(f"no Kaggle credentials found; {HOW_TO_AUTHENTICATE}")
    # Importing kaggle authenticates and prints to stdout; keep its chatter out of our output.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise KaggleError(f"Kaggle did not accept the credentials from {source}; {HOW_TO_AUTHENTICATE}") from None
    return Kaggle(api, source)


def http_failure(what: str, error: Any, credential_source: str) -> str:
    status = error.response.status_code if error.response is not None else None
    reason = str(error.args[0]) if error.args else ""
    if status in (401, 403):
        return (f"{what}: Kaggle refused the credentials from {credential_source} (HTTP {status}: {reason}). "
                f"If they are right, accept the competition's rules on its web page; otherwise {HOW_TO_AUTHENTICATE}")
    if status == 404:
        return f"{what}: not found on Kaggle (HTTP 404: {reason}); check the competition name"
    if status is not None and status >= 500:
        return f"{what}: Kaggle server error (HTTP {status}: {reason}); nothing was changed here, try again later"
    return f"{what}: Kaggle answered HTTP {status}: {reason}"


@dataclass(frozen=True)
class Kaggle:
    """One authenticated kaggle.api.KaggleApi and where its credentials came from (for messages)."""

    api: Any
    credential_source: str

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call; HTTP and network failures become a KaggleError naming `what` failed."""
        import requests

        try:
            with contextlib.redirect_stdout(io.StringIO()) as chatter:
                result = function(*args, **kwargs)
        except requests.HTTPError as error:
            raise KaggleError(http_failure(what, error, self.credential_source)) from None
        except requests.ConnectionError as error:
            raise KaggleError(f"{what}: cannot reach Kaggle ({type(error).__name__}); check the network or proxy settings") from None
        for line in chatter.getvalue().splitlines():
            log.info("kaggle: %s", line)
        return result

    def download_competition(self, slug: str, dest: Path) -> Path:
        """The competition's files as one .zip at `dest` (what `kaggle competitions download -c slug` saves)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            self.call(f"download of competition {slug!r}", self.api.competition_download_files, slug, path=tmp, force=True, quiet=True)
            downloaded = sorted(Path(tmp).iterdir())
            if len(downloaded) != 1 or not zipfile.is_zipfile(downloaded[0]):
                raise KaggleError(f"download of competition {slug!r} gave {[p.name for p in downloaded]}, not one .zip archive")
            os.replace(downloaded[0], dest)  # same folder: the archive appears whole or not at all
        return dest

    def submit(self, slug: str, file: Path, message: str) -> int:
        """Upload `file` as a submission; its reference number."""
        response = self.call(f"submission to {slug!r}", self.api.competition_submit, str(file), message, slug, quiet=True)
        if not response.ref:
            raise KaggleError(f"submission to {slug!r}: the upload of {file} failed ({response.message}); nothing was submitted, try again")
        log.info("kaggle: %s", response.message)
        return int(response.ref)

    def list_submissions(self, slug: str) -> list[Submission]:
        found = self.call(f"listing submissions of {slug!r}", self.api.competition_submissions, slug) or []
        return [Submission(ref=s.ref, date=str(s.date), file_name=s.file_name or "", description=s.description or "",
                           status=s.status.name, public_score=s.public_score or None, private_score=s.private_score or None,
                           error=s.error_description or None) for s in found]

    def wait_for_score(self, slug: str, ref: int, timeout: float, poll_seconds: float = 5.0) -> tuple[Submission | None, list[Submission]]:
        """Submission `ref` once scored or rejected (None if still pending after `timeout` s), and the last listing."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.list_submissions(slug)
            mine = next((s for s in listed if s.ref == ref), None)
            if mine is not None and mine.status != "PENDING":
                return mine, listed
            if time.monotonic() >= deadline:
                return None, listed
            time.sleep(poll_seconds)
