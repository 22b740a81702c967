"""`python -m pipeline submit FILE -m MESSAGE`: validate a submission CSV, send it to Kaggle, print its score.

Not a DVC stage: submitting spends one of the day's submissions, so it is run by hand. FILE is
checked against the competition's sample_submission.csv (header, ids and their order, row count,
labels the competition knows or probabilities from 0 to 1, no empty cells) before anything is uploaded.
The message sent to Kaggle ends with what was submitted: the git commit, the DVC experiment whose
results are in the workspace (when there is one) and the OOF score by the competition's metric from
metrics/<FILE's name>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
from pathlib import Path

import pandas as pd

from pipeline.config import load_config
from pipeline.data import load_prepared
from pipeline.errors import PipelineError
from pipeline.evaluation.submission_format import SubmissionError, read_sample, validate_submission
from pipeline.files import read_json
from pipeline.kaggle.api import KaggleError, Submission, competition_slug, connect

log = logging.getLogger(__name__)


def validate_file(file: Path, data_dir: Path) -> int:
    """Check FILE as Kaggle would; its row count."""
    if not file.is_file():
        raise SubmissionError(f"{file} does not exist; `dvc repro` writes submissions/<model>.csv")
    data = load_prepared(data_dir)
    try:
        submission = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SubmissionError(
            f"{file} is not a readable CSV ({error}); write it with a header and one row per test id"
        ) from None
    sample = read_sample(data_dir / "sample_submission.csv")
    validate_submission(submission, sample, data.submission_labels, str(file), data.multi_label)
    return len(submission)


def git(*args: str) -> str | None:
    done = subprocess.run(["git", *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def commit_label() -> str:
    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "no git commit"
    return commit + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")


def experiment_name(lock_file: Path = Path("dvc.lock")) -> str | None:
    """The DVC experiment whose dvc.lock matches the workspace's: whose outputs these are."""
    if not lock_file.is_file():
        return None
    wanted = hashlib.md5(lock_file.read_bytes()).hexdigest()
    refs = git("for-each-ref", "refs/exps", "--format=%(refname)") or ""
    for ref in refs.splitlines():
        locked = subprocess.run(["git", "show", f"{ref}:dvc.lock"], capture_output=True)
        if locked.returncode == 0 and hashlib.md5(locked.stdout).hexdigest() == wanted:
            return ref.rsplit("/", 1)[-1]
    return None


def oof_score(file: Path, metrics_dir: Path) -> str:
    """The OOF score of the model behind `file`, by the competition's metric: `OOF accuracy 0.7012`."""
    path = metrics_dir / f"{file.stem}.json"
    if not path.is_file():
        return "OOF n/a"
    metrics = read_json(path)
    return f"OOF {metrics['metric']} {metrics['score']:.4f}"


def full_message(message: str, file: Path, metrics_dir: Path) -> str:
    parts = [oof_score(file, metrics_dir), f"commit {commit_label()}"]
    experiment = experiment_name()
    if experiment:
        parts.append(f"exp {experiment}")
    return f"{message} [{file.name}; {'; '.join(parts)}]"


def format_submissions(submissions: list[Submission], limit: int = 5) -> str:
    lines = [f"{'ref':>10}  {'date':19}  {'status':8}  {'public':>8}  {'private':>8}  description"]
    for s in submissions[:limit]:
        lines.append(
            f"{s.ref:>10}  {s.date[:19]:19}  {s.status:8}  {s.public_score or '–':>8}  {s.private_score or '–':>8}  "
            f"{s.description}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline submit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, help="submission CSV, e.g. submissions/ensemble.csv")
    parser.add_argument("-m", "--message", required=True, help="submission description")
    parser.add_argument(
        "-c", "--competition", help="competition name (default: from data.source data/kaggle/<name>.zip)"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and show the message; upload nothing")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the score (default 120)")
    parser.add_argument(
        "--data", type=Path, default=Path("data/prepared"), help="prepared dataset (sample_submission.csv, classes)"
    )
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="folder of <model>.json OOF metrics")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    slug = args.competition or competition_slug(load_config(args.params).data.source)
    rows = validate_file(args.file, args.data)
    message = full_message(args.message, args.file, args.metrics)
    print(f"{args.file}: valid ({rows} rows, matches sample_submission.csv)")
    print(f"message: {message}")
    if args.dry_run:
        return
    if slug is None:
        raise PipelineError(
            "no competition to submit to: pass --competition <name>, or set data.source to data/kaggle/<name>.zip"
        )
    kaggle = connect()
    ref = kaggle.submit(slug, args.file, message)
    print(f"submitted to {slug} as submission {ref}")
    scored, listed = kaggle.wait_for_score(slug, ref, timeout=args.wait)
    print(format_submissions(listed))
    if scored is None:
        print(f"not scored after {args.wait:.0f}s; see it later with `kaggle competitions submissions -c {slug}`")
    elif scored.status == "ERROR":
        raise KaggleError(f"Kaggle could not score submission {ref}: {scored.error or 'no reason given'}")
    else:
        print(
            f"score: public {scored.public_score}"
            + (f", private {scored.private_score}" if scored.private_score else "")
        )
