"""The workspace as one git commit, for workers to check out, without touching the user's index or branch.

The commit holds what `git add -A` would stage (edited and new files, dvc.lock as the head just wrote it;
ignored files, stage outputs among them, stay out) on top of HEAD. It is kept under refs/distribute/ so
that a worker can fetch it like any commit, and removed by `forget` once the workers are done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError

REFS = "refs/distribute"
AUTHOR = {"GIT_AUTHOR_NAME": "distribute", "GIT_AUTHOR_EMAIL": "distribute@localhost"}
COMMITTER = {"GIT_COMMITTER_NAME": "distribute", "GIT_COMMITTER_EMAIL": "distribute@localhost"}


def _git(args: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _head(root: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() or None


def snapshot(root: Path) -> str:
    """Commit the workspace as it is (see the module's docstring) and return the commit's id."""
    if not (root / ".git").exists():
        raise PipelineError(f"{root} is not a git repository: `distribute` hands workers a commit; run `git init`")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"), **AUTHOR, **COMMITTER)
        parent = _head(root)
        if parent:
            _git(["read-tree", parent], root, env)
        _git(["add", "-A"], root, env)
        tree = _git(["write-tree"], root, env)
        commit = _git(
            ["commit-tree", tree, *(["-p", parent] if parent else []), "-m", "distribute snapshot"], root, env
        )
    _git(["update-ref", f"{REFS}/{commit}", commit], root)
    return commit


def forget(root: Path, commit: str) -> None:
    _git(["update-ref", "-d", f"{REFS}/{commit}"], root)


def check_out(repo: str, commit: str, scratch: Path) -> None:
    """A fresh checkout of `commit` from `repo` (a path or git URL) in `scratch`, replacing what was there."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    source = repo if "://" in repo or ":" in repo.split("/")[0] else f"file://{Path(repo).resolve()}"
    _git(["init", "-q"], scratch)
    _git(["fetch", "-q", "--depth", "1", source, f"{REFS}/{commit}"], scratch)
    _git(["checkout", "-q", "--detach", commit], scratch)
