"""Stage `download`: fetch a Kaggle competition's files when `data.source` is `data/kaggle/<slug>.zip`.

The archive is the one `kaggle competitions download -c <slug>` saves, fetched through the kaggle
package with the usual credentials (see pipeline/kaggle/api.py). `prepare` then reads it like any
local .zip, and DVC tracks it as prepare's input, so a finished download is never repeated. Any other
source is a local file or folder: nothing is fetched and the output folder stays empty.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import load_config
from pipeline.files import atomic_dir
from pipeline.kaggle.api import KAGGLE_FOLDER, competition_slug, connect

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline download", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(KAGGLE_FOLDER), help="folder for <slug>.zip")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    source = load_config(args.params).data.source
    slug = competition_slug(source)
    with atomic_dir(args.out) as tmp:
        if slug is None:
            log.info("download: data.source %s is local; nothing to fetch", source)
            return
        connect().download_competition(slug, tmp / f"{slug}.zip")
        size = (tmp / f"{slug}.zip").stat().st_size
    log.info("download: competition %s → %s (%.1f MB)", slug, args.out / f"{slug}.zip", size / 1e6)
