"""The systems under test (BENCH.md): batchgate on SQLite and PostgreSQL, Celery, arq, SAQ and
procrastinate."""

from __future__ import annotations

from bench.suite.systems.alternatives import ArqSystem, CelerySystem, ProcrastinateSystem, SaqSystem
from bench.suite.systems.base import Env, System
from bench.suite.systems.batchgate import BatchgateSystem


def all_systems() -> list[System]:
    """Every system, in report order; `--systems` picks among their ids."""
    return [
        BatchgateSystem("BG-S", database="sqlite", workers=0),
        BatchgateSystem("BG-S0", database="sqlite", workers=0, observed=False),
        BatchgateSystem("BG-SC", database="sqlite", workers=0, concurrency=50),
        BatchgateSystem("BG-SC10", database="sqlite", workers=0, concurrency=10, capped=False),
        BatchgateSystem("BG-P1", database="postgres", workers=1),
        BatchgateSystem("BG-P2", database="postgres", workers=2),
        CelerySystem("CEL-D", tuned=False),
        CelerySystem("CEL-T", tuned=True),
        CelerySystem("CEL-TF", tuned=True, fsync=True),
        ArqSystem("ARQ-D", tuned=False),
        ArqSystem("ARQ-T", tuned=True),
        ArqSystem("ARQ-TF", tuned=True, fsync=True),
        SaqSystem("SAQ-D", tuned=False),
        SaqSystem("SAQ-T", tuned=True),
        ProcrastinateSystem("PRO-D", tuned=False),
        ProcrastinateSystem("PRO-T", tuned=True),
    ]


__all__ = [
    "ArqSystem",
    "BatchgateSystem",
    "CelerySystem",
    "Env",
    "ProcrastinateSystem",
    "SaqSystem",
    "System",
    "all_systems",
]
