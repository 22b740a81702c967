"""`python -m pipeline <name> [options]`: run one pipeline stage (as dvc.yaml does) or a by-hand command.

Stages live in pipeline/stages/<name>.py, named like their dvc.yaml stage; commands that are run by
hand (they spend a Kaggle submission, edit params.yaml, ...) live in pipeline/commands/<name>.py.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import logging
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KINDS = {
    "stages": "pipeline stages (dvc.yaml runs them; `dvc repro` is the usual way)",
    "commands": "commands run by hand",
}
INTERRUPTED = 130  # the shell's exit status for a process ended by Ctrl-C
# Stage names (patterns) that must not run here: `distribute` sets it for the head's `dvc repro`, which
# restores them from the run-cache; DVC runs a stage's command only when that finds nothing.
RESTORE_ONLY_ENV = "PIPELINE_RESTORE_ONLY"


def available() -> dict[str, dict[str, str]]:
    """{kind: {name: first line of its docstring}}, read from the files without importing them."""
    found: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        found[kind] = {}
        for path in sorted((PACKAGE / kind).glob("[!_]*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            found[kind][path.stem] = doc.splitlines()[0] if doc else ""
    return found


def usage() -> str:
    lines = ["usage: python -m pipeline <name> [options]   (python -m pipeline <name> -h: its options)", ""]
    for kind, names in available().items():
        lines.append(f"{KINDS[kind]}:")
        lines += [f"  {name:<12} {summary}" for name, summary in names.items()]
        lines.append("")
    return "\n".join(lines).rstrip()


def module_of(name: str) -> str | None:
    for kind in KINDS:
        if not name.startswith("_") and (PACKAGE / kind / f"{name}.py").is_file():
            return f"pipeline.{kind}.{name}"
    return None


def refused_here() -> str | None:
    """Why the stage DVC is running (DVC_STAGE) must not run in this process, or None."""
    stage = os.environ.get("DVC_STAGE", "")
    patterns = [p for p in os.environ.get(RESTORE_ONLY_ENV, "").split(",") if p]
    if stage and any(fnmatch.fnmatchcase(stage, pattern) for pattern in patterns):
        return (
            f"{stage} was to be restored from DVC's run-cache, which has no entry for it, so it would run here "
            "instead of on the cluster: run `python -m pipeline distribute` again, which runs what is missing "
            f"(or unset {RESTORE_ONLY_ENV} to run it here)"
        )
    return None


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    module = module_of(argv[0]) if argv else None
    if module is None:
        unknown = f"unknown name {argv[0]!r}\n" if argv else ""
        print(f"{unknown}{usage()}", file=sys.stderr)
        return 2
    refusal = refused_here()
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from pipeline.errors import PipelineError  # here: `--help` stays fast

    try:
        code = importlib.import_module(module).main(argv[1:])
    except PipelineError as error:  # anything else is a bug: its traceback stays
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\n{argv[0]}: interrupted; outputs are written whole or not at all, so run it again to go on",
            file=sys.stderr,
        )
        return INTERRUPTED
    return code if isinstance(code, int) else 0  # a command may say "done, but some inputs were skipped"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
