"""What each job kind does, shared by batchgate's actions, the Celery tasks and the arq jobs.

noop returns its input and two timestamps (when it started and finished, Unix seconds);
io10 does the same around a 10 ms sleep; http POSTs its params to the upstream stub, whose
answer carries `echo` (the params) and `at` (when the stub saw the call).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

IO_SECONDS = 0.010
STUB_PATH = "/api/1.0/stub?action=echo"


def noop(params: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    return {"echo": params, "started": started, "finished": time.time()}


async def io10(params: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    await asyncio.sleep(IO_SECONDS)
    return {"echo": params, "started": started, "finished": time.time()}


def io10_blocking(params: dict[str, Any]) -> dict[str, Any]:
    """io10 for a thread or process pool (Celery): the same wait, blocking."""
    started = time.time()
    time.sleep(IO_SECONDS)
    return {"echo": params, "started": started, "finished": time.time()}


def unknown(namespace: str, action: str) -> dict[str, Any]:
    """The error body a job naming an unknown action gets (as batchgate answers it)."""
    return {"errorCode": 404, "message": f"Unknown action {namespace}.{action}", "specificCode": None}
