"""A CPU-bound job kind for the scale-out benchmark: `bench.cpu` spends BENCH_CPU_MS milliseconds
(2 by default) of its thread's CPU time, then answers like `bench.noop`: its input and two
timestamps.

Serve it with `--app bench.suite.cpu_actions:app`; the app serves `bench.noop` and `bench.io10`
of bench/suite/actions.py too. A job costs CPU time, not wall time: under a CPU quota it takes
longer by the clock but costs the same, so a worker's ceiling is its quota over that cost (at 20 %
of a core and 2 ms a job, 100 jobs/s). It runs on the event loop, as a CPU-heavy async action would.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.suite import actions

try:
    from batchgate.actions import App
except ImportError:  # batchgate before 0.2 called the application object Gateway
    from batchgate.actions import Gateway as App  # type: ignore[attr-defined,no-redef]

NAMESPACE, ACTION = "bench", "cpu"
CPU_MS_DEFAULT = 2.0
CPU_MS = float(os.environ.get("BENCH_CPU_MS", CPU_MS_DEFAULT))
ROUND = 200  # work between two readings of the thread's clock


def spend_cpu(ms: float) -> int:
    """Works until this thread has used `ms` milliseconds of CPU; how many rounds that took."""
    end = time.thread_time() + ms / 1000
    rounds = acc = 0
    while time.thread_time() < end:
        for i in range(ROUND):
            acc ^= i * i
        rounds += 1
    return rounds


def cpu(params: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    spend_cpu(CPU_MS)
    return {"echo": params, "started": started, "finished": time.time()}


def job(batch: int, index: int) -> dict[str, Any]:
    """One `bench.cpu` job, with the params every kind has (workload.py)."""
    return {"namespace": NAMESPACE, "action": ACTION, "params": {"b": batch, "j": index}}


def _app() -> App:
    app = App()
    app.include(actions.core)

    @app.action(NAMESPACE, ACTION)
    async def cpu_job(**params: Any) -> dict[str, Any]:
        return cpu(params)

    return app


app = _app()
