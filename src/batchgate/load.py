"""How busy this process is: what a worker asks before it takes another batch.

A batch a worker claims but cannot run yet is a batch an idle worker could have run. So a worker
takes batches while it has room, and a process has no room when its event loop runs late (its CPU
is spent, by its own work, by the GIL, or by a quota: a throttled process sleeps through its
timers) or when every action thread is taken."""

from __future__ import annotations

import asyncio

from batchgate import metrics

SAMPLE_S = 0.025  # how often the loop is timed
BUSY_LAG_S = 0.010  # a loop this late, on average, has no room for more


class LoopLag:
    """How late the event loop runs a timer that should fire every SAMPLE_S: an average over the
    last few tenths of a second, 0 on an idle loop."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._measure(), name="batchgate-loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def busy(self) -> bool:
        return self.lag_s > BUSY_LAG_S

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            self.lag_s += (max(0.0, loop.time() - due) - self.lag_s) / 4
            metrics.LOOP_LAG.set(self.lag_s)
