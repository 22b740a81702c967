"""Stage `pretrained`: what each backbone starts from, by identity, so that DVC re-runs its tune@ and train@
stages exactly when the weights change.

    pretrained/<backbone>.json   {"pretrained": as set in params.yaml, "identity": hub id@commit | sha256:<hex> | null}

A weight file replaced at the same path, or a new snapshot of a hub id in the cache, changes no param: dvc.yaml
runs this stage on every `dvc repro` (always_changed); its files are the same bytes while the weights stay, so
the stages after it re-run only for a backbone whose weights changed. It also fails before any training when a
backbone's weights are missing (offline and not cached, or no such file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_config
from pipeline.files import atomic_dir, write_json
from pipeline.training.pretrained import resolve


def starting_points(params: str | Path) -> dict[str, dict]:
    """Each backbone's `pretrained` setting and the identity of the weights it names (None: from scratch)."""
    config = load_config(params)
    found = {}
    for name in config.backbones:
        settings = config.backbone(name)
        weights = resolve(settings)
        found[name] = {"pretrained": settings.pretrained, "identity": None if weights is None else weights.identity}
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline pretrained", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder of one JSON per backbone")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    found = starting_points(args.params)
    with atomic_dir(args.out) as folder:
        for name, record in found.items():
            write_json(record, folder / f"{name}.json")
            print(f"pretrained: {name}: {record['identity'] or 'from scratch'}")
