"""The project modules a module imports, transitively, read from the source (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


def module_path(module: str) -> Path | None:
    base = PROJECT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(path: Path) -> set[str]:
    """Project modules named by any import statement in `path`, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] == PACKAGE and module_path(name)}
    return found


def with_packages(module: str) -> set[str]:
    """`module` and the packages Python runs on the way to it (pipeline, pipeline.stages, ...)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(module: str) -> set[Path]:
    """Files of every project module that importing `module` runs, `module` included."""
    seen: set[str] = set()
    todo = set(with_packages(module))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for found in direct_imports(module_path(name)):
            todo |= with_packages(found) - seen
    return {module_path(name) for name in seen}
