"""`python -m pipeline preset presets/<name>.yaml`: write a preset's settings into params.yaml.

A preset is a partial params.yaml. Its mappings merge key by key into params.yaml, except
`backbones`, which it replaces whole (a preset names exactly the runs it wants); lists and values
replace. params.yaml keeps its comments, so `git diff params.yaml` shows exactly what the preset
changed, and the `dvc exp run` that follows records it as an experiment. The result is checked
with the same loader the stages use before params.yaml is touched.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from pipeline.config import config_from_dict
from pipeline.errors import ConfigError
from pipeline.files import atomic_path

REPLACED_WHOLE = {"backbones"}


def merge(base: Any, overlay: Any, key: str = "") -> Any:
    if not isinstance(overlay, dict) or not isinstance(base, dict) or key in REPLACED_WHOLE:
        return overlay
    for name, value in overlay.items():
        base[name] = merge(base[name], value, name) if name in base else value
    return base


def apply_preset(preset: Path, params: Path) -> dict:
    """Merge `preset` into `params` in place; the preset's own settings, for printing."""
    overlay = yaml.safe_load(preset.read_text())
    if not isinstance(overlay, dict):
        raise ConfigError(f"{preset}: a preset is a mapping of params.yaml sections, e.g. `train: {{epochs: 30}}`")
    editor = YAML()
    editor.preserve_quotes = True
    document = editor.load(params.read_text())
    unknown = set(overlay) - set(document)
    if unknown:
        raise ConfigError(f"{preset}: section(s) {sorted(unknown)} are not in {params}; known: {sorted(document)}")
    merged = merge(document, overlay)
    config_from_dict(
        yaml.safe_load(_dump(editor, merged)), where=str(preset)
    )  # refuse a preset the stages would refuse
    with atomic_path(params) as tmp:
        tmp.write_text(_dump(editor, merged))
    return overlay


def _dump(editor: YAML, document: Any) -> str:
    buffer = io.StringIO()
    editor.dump(document, buffer)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline preset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", type=Path, help="e.g. presets/fer2013-cpu.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    if not args.preset.is_file():
        choices = sorted(p.name for p in Path("presets").glob("*.yaml")) if Path("presets").is_dir() else []
        raise ConfigError(f"preset {args.preset} does not exist; presets here: {choices or 'none'}")
    overlay = apply_preset(args.preset, args.params)
    print(
        f"preset: {args.preset} written into {args.params} ({', '.join(overlay)}); `git diff {args.params}` shows the "
        "changes"
    )
