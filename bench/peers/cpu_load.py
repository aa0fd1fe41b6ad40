"""How busy the machine's other processes are, for the benchmarks' notes on timing conditions.

Plain standard library: both the package venv (``bench/*.py``) and the benchmark venv (the peer scripts
here) import it.
"""
from __future__ import annotations

import os
import time


def other_busy_cores(interval: float = 1.0) -> float:
    """Cores' worth of CPU used by other processes while this one sleeps ``interval`` s (from /proc/stat;
    NaN where it cannot be read)."""
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait
    try:
        total0, idle0 = snap()
        time.sleep(interval)
        total1, idle1 = snap()
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = total1 - total0
    return float("nan") if total <= 0 else (1.0 - (idle1 - idle0) / total) * (os.cpu_count() or 1)
