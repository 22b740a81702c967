"""The deployment table: what each exported graph weighs, how fast it runs on this CPU, how well it scores.

The export stage fills it (latency from `pipeline.runtime.classifier.latency_ms`, measured on the machine
that runs the stage, so compare rows of one table only); the report shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class DeploymentRow:
    model: str  # a backbone's name (one fold model) or "ensemble" (every fold model of the blend)
    precision: str  # fp32 | int8
    file: str
    size_mb: float
    latency_ms: dict[str, float]  # thread count (as text, JSON's keys) -> median ms per face at batch 1
    oof_accuracy: float  # each fold's graph on its own held-out fold; the ensemble blends those
    oof_ccc: dict[str, float]  # per regression target (valence, arousal), the same way; {} when none

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> DeploymentRow:
        return cls(**raw)


def size_mb(path: Path) -> float:
    return round(path.stat().st_size / BYTES_PER_MB, 2)


def markdown(rows: list[DeploymentRow], caption: str) -> str:
    threads = list(rows[0].latency_ms) if rows else []
    targets = list(rows[0].oof_ccc) if rows else []
    header = [
        "model",
        "precision",
        "file",
        "size MB",
        *[f"ms/face, {t} thread{'s' if t != '1' else ''}" for t in threads],
        "OOF accuracy",
        *[f"OOF CCC {name}" for name in targets],
    ]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row.model,
            row.precision,
            row.file,
            f"{row.size_mb:.2f}",
            *[f"{row.latency_ms[t]:.2f}" for t in threads],
            f"{row.oof_accuracy:.4f}",
            *[f"{row.oof_ccc[name]:.3f}" for name in targets],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
