"""Actions that run in worker processes (process=True): importable by name, as a spawned process needs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchgate import App

app = App()


@app.action("cpu", "sum", process=True)
def sum_of_squares(n: int) -> dict[str, int]:
    return {"sum": sum(i * i for i in range(n)), "pid": os.getpid()}


@app.action("cpu", "hang", process=True, timeout_s=1.0)
def hang(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)  # stands for CPU-bound work that never ends


@app.action("cpu", "hang_long", process=True, timeout_s=60.0)
def hang_long(pid_file: str) -> None:
    hang(pid_file)
