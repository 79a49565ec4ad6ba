"""Memory and CPU time of single processes, read from /proc: what the scale-out and soak modes
sample, without psutil (which the bench extra lists, but which an environment may lack)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process, in MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) * 1024 / MB, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    try:
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process still there."""
    found = {pid: cpu_s(pid) for pid in pids}
    return {pid: value for pid, value in found.items() if value is not None}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings; a process new in `after` counts from zero."""
    return round(sum(value - before.get(pid, 0.0) for pid, value in after.items()), 3)
