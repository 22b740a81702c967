"""`python -m pipeline weights MODEL...`: put pretrained weights into the Hugging Face cache, for `pretrained`.

Each MODEL is a timm model name (its default weights, as `pretrained: true` takes them) or a hub id
(`timm/convnext_nano.in12k_ft_in1k`). Run it on a machine with internet, then copy the cache
(`HF_HOME`, by default ~/.cache/huggingface) to a machine without: `dvc repro` there reads it, with
`HF_HUB_OFFLINE=1` or without. Weights already cached are only reported.
"""

from __future__ import annotations

import argparse

from pipeline.training.pretrained import hub_id, hub_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="timm model name or hub id")
    args = parser.parse_args(argv)
    for model in args.models:
        weights = hub_weights(hub_id(model))
        print(f"weights: {model} → {weights.identity} ({weights.file})")
    return 0
