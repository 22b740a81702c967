"""What the machine at hand offers the pipeline's parallel work."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (a container or `taskset` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
