"""Deadlines for the calls in flight, kept with one timer.

A timer of its own for every call (`asyncio.timeout`) costs more than a fast action does; the
calls of an app share one timer instead, set for the earliest deadline, which cancels every call
past its own when it fires and is set again for the next.
"""

from __future__ import annotations

import asyncio
import itertools
import math


class Deadlines:
    def __init__(self) -> None:
        self._due: dict[int, tuple[float, asyncio.Task[object]]] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's (an app may outlive a loop)

    def start(self, timeout_s: float) -> int:
        """Watches the current task's call: cancelled once `timeout_s` has passed. The call's id."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task to cancel")
        call, at = next(self._ids), loop.time() + timeout_s
        self._due[call] = (at, task)
        if at < self._timer_at or loop is not self._loop:
            self._set_timer(loop, at)
        return call

    def finish(self, call: int) -> bool:
        """Stops watching a call; whether it ran past its deadline and was cancelled for that (the
        cancel is taken back, so the task goes on)."""
        self._due.pop(call, None)
        if call not in self._expired:
            return False
        self._expired.discard(call)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def _set_timer(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at, self._loop = loop.call_at(at, self._fire, loop), at, loop

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        for call, (at, task) in list(self._due.items()):
            if at <= now:
                del self._due[call]
                self._expired.add(call)
                task.cancel()
        if self._due:
            self._set_timer(loop, min(at for at, _ in self._due.values()))
