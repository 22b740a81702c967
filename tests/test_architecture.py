"""The package's shape: no import circle, and a runtime that runs without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PIPELINE_ENV, PROJECT
from tests.imports import closure, direct_imports, module_path

PACKAGE_DIR = PROJECT / "pipeline"
MODULES = sorted(
    ".".join(p.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE_DIR.rglob("*.py")
)
# What `predict`, `video` and the bundle's readers may load: onnxruntime and OpenCV, never a training library.
TRAINING_LIBRARIES = ("torch", "timm", "torchvision", "albumentations")
RUNTIME_ENTRY_POINTS = (
    "pipeline.commands.predict",
    "pipeline.commands.video",
    "pipeline.runtime.frames",
    "pipeline.runtime.classifier",
)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (at any level of the file, lazy imports included)."""
    return {name: {found for found in direct_imports(module_path(name)) if found in MODULES} for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it started, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_of_the_package_imports_itself_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("entry", RUNTIME_ENTRY_POINTS)
def test_the_runtime_side_imports_no_training_library_in_its_source(entry):
    for path in closure(entry):
        source = path.read_text()
        for library in TRAINING_LIBRARIES:
            assert f"import {library}" not in source and f"from {library}" not in source, (
                f"{path.relative_to(PROJECT)} (imported by {entry}) imports {library}; keep the runtime free of "
                "training libraries"
            )


def test_the_runtime_side_loads_no_training_library_when_run():
    """The real import, in a fresh interpreter: a dependency's own imports count too."""
    code = (
        "import sys\n"
        + "".join(f"import {entry}\n" for entry in RUNTIME_ENTRY_POINTS)
        + f"loaded = sorted(name for name in {TRAINING_LIBRARIES!r} if name in sys.modules)\n"
        + "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=PIPELINE_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
