"""What the machine at hand offers the pipeline's parallel work, and what tells one machine from another."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that decide how fast bf16 and fp32 train on a CPU (docs/configuration.md gives the
# figures measured): bf16 autocast wins with AVX512-BF16 or AMX and loses without either.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def available_cores() -> int:
    """Cores this process may run on (a container or `taskset` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_description() -> str:
    """The CPU's model and which of SPEED_FLAGS it has, e.g. 'AMD EPYC; avx2 avx512f avx512_bf16'."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: the platform's own words
        return platform.processor() or platform.machine()
    info: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        info.setdefault(name.strip(), value.strip())  # the first core's; every core's are the same
    flags = set(info.get("flags", "").split())
    return f"{info.get('model name') or platform.machine()}; {' '.join(f for f in SPEED_FLAGS if f in flags)}"
