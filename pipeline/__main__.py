"""`python -m pipeline <name> [options]`: run one pipeline stage (as dvc.yaml does) or a by-hand command.

Stages live in pipeline/stages/<name>.py, named like their dvc.yaml stage; commands that are run by
hand (they spend a Kaggle submission, edit params.yaml, ...) live in pipeline/commands/<name>.py.
"""

from __future__ import annotations

import ast
import importlib
import logging
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KINDS = {
    "stages": "pipeline stages (dvc.yaml runs them; `dvc repro` is the usual way)",
    "commands": "commands run by hand",
}
INTERRUPTED = 130  # the shell's exit status for a process ended by Ctrl-C


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


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    module = module_of(argv[0]) if argv else None
    if module is None:
        unknown = f"unknown name {argv[0]!r}\n" if argv else ""
        print(f"{unknown}{usage()}", file=sys.stderr)
        return 2
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
