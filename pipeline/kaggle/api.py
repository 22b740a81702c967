"""The kaggle package's API, behind errors a user can act on.

Credentials are found where the kaggle client looks for them (an access token, KAGGLE_USERNAME and
KAGGLE_KEY, kaggle.json) and are never printed: messages name where they came from, not what they are.
The kaggle package reads its settings when it is first imported, so it is imported only here, late.

Every failure of the kaggle client (signing in included) becomes a KaggleError (pipeline/kaggle/failures.py).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import ConfigError
from pipeline.kaggle.failures import (
    HOW_TO_AUTHENTICATE,
    TOKEN_FILES,
    KaggleError,
    how_to_fix,
    is_token,
    kaggle_failures,
    redact,
)

log = logging.getLogger(__name__)

KAGGLE_FOLDER = PurePosixPath("data/kaggle")
SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")


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
        raise ConfigError(
            f"data.source {source!r}: write it as {KAGGLE_FOLDER}/{slug}.zip; "
            "the download stage saves the competition there and DVC tracks it as a file"
        )
    path = PurePosixPath(source)
    if path.parent != KAGGLE_FOLDER:
        return None
    if path.suffix != ".zip" or not SLUG.fullmatch(path.stem):
        raise ConfigError(
            f"data.source {source!r}: a Kaggle source is {KAGGLE_FOLDER}/<competition>.zip, "
            "where <competition> is the name in the competition's URL, e.g. data/kaggle/digit-recognizer.zip"
        )
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
    """Where the kaggle client will take credentials from, or None when there are none (the client's order)."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "$KAGGLE_API_TOKEN"
    for name in TOKEN_FILES:
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
    # Importing kaggle signs in once already (its package __init__ hides any failure of that) and prints
    # to stdout; kaggle_failures keeps that chatter out of our output. The sign-in that counts is ours:
    # with an access token it asks Kaggle whether the token is valid, so it can fail like any call.
    with kaggle_failures("signing in to Kaggle", source, signing_in=True):
        from kaggle.api.kaggle_api_extended import AuthMethod, KaggleApi

        api = KaggleApi()
        api.authenticate()
    if is_token(source) and api.config_values.get(api.CONFIG_NAME_AUTH_METHOD) != str(AuthMethod.ACCESS_TOKEN):
        # Kaggle called the token inactive and the client signed in with the next credentials it found, an
        # API key; but its calls still send the token it finds (kagglesdk's KaggleHttpClient reads
        # KAGGLE_API_TOKEN and ~/.kaggle/access_token before any key), and every one of them would be refused.
        raise KaggleError(
            f"signing in to Kaggle: Kaggle did not accept the credentials from {source}; {how_to_fix(source)}"
        )
    return Kaggle(api, source)


@dataclass(frozen=True)
class Kaggle:
    """One authenticated kaggle.api.KaggleApi and where its credentials came from (for messages)."""

    api: Any
    credential_source: str

    @property
    def secrets(self) -> list[str | None]:
        """The key or token the client signed in with (kept out of every message)."""
        values = getattr(self.api, "config_values", None) or {}
        return [values.get("key"), values.get("token")]

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call; any failure becomes a KaggleError naming `what` failed and what to do."""
        with kaggle_failures(what, self.credential_source, secrets=self.secrets) as chatter:
            result = function(*args, **kwargs)
        for line in chatter.getvalue().splitlines():
            log.info("kaggle: %s", redact(line, self.secrets))
        return result

    def download_competition(self, slug: str, dest: Path) -> Path:
        """The competition's files as one .zip at `dest` (what `kaggle competitions download -c slug` saves)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            self.call(
                f"download of competition {slug!r}",
                self.api.competition_download_files,
                slug,
                path=tmp,
                force=True,
                quiet=True,
            )
            downloaded = sorted(Path(tmp).iterdir())
            if len(downloaded) != 1 or not zipfile.is_zipfile(downloaded[0]):
                raise KaggleError(
                    f"download of competition {slug!r} gave {[p.name for p in downloaded]}, not one .zip archive"
                )
            os.replace(downloaded[0], dest)  # same folder: the archive appears whole or not at all
        return dest

    def submit(self, slug: str, file: Path, message: str) -> int:
        """Upload `file` as a submission; its reference number."""
        response = self.call(
            f"submission to {slug!r}", self.api.competition_submit, str(file), message, slug, quiet=True
        )
        if not response.ref:
            raise KaggleError(
                f"submission to {slug!r}: the upload of {file} failed ({response.message}); nothing was submitted, try "
                "again"
            )
        log.info("kaggle: %s", response.message)
        return int(response.ref)

    def list_submissions(self, slug: str) -> list[Submission]:
        found = self.call(f"listing submissions of {slug!r}", self.api.competition_submissions, slug) or []
        return [
            Submission(
                ref=s.ref,
                date=str(s.date),
                file_name=s.file_name or "",
                description=s.description or "",
                status=s.status.name,
                public_score=s.public_score or None,
                private_score=s.private_score or None,
                error=s.error_description or None,
            )
            for s in found
        ]

    def wait_for_score(
        self, slug: str, ref: int, timeout: float, poll_seconds: float = 5.0
    ) -> tuple[Submission | None, list[Submission]]:
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
