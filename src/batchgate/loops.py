"""What the worker and the delivery loop share: claim what is due, run each item as a task, and
wait on a wake-up, a finished task or the poll interval, never on a bare sleep; and take items
handed over directly (leased in the transaction that writes them) through a `Slot`."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from batchgate import metrics
from batchgate.store import StoreError

log = logging.getLogger(__name__)

ADMIT_AGAIN_S = 0.05  # a loop that took less than it could looks again this soon

T = TypeVar("T")


def owner_id(role: str) -> str:
    """Names a lease holder: host, process and a random suffix, for the operator reading the table."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class StoreHealth:
    """Whether a loop can use the store. A store that fails (a full disk, a database gone) is said
    once, when it starts failing or fails otherwise, not at every poll, and the loop looks again
    less and less often (up to a minute) until it works again, which is said once too."""

    MAX_BACKOFF_S = 60.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.failure: str | None = None
        self.failures = 0

    def failed(self, exc: StoreError) -> None:
        self.failures += 1
        metrics.STORE_ERRORS.labels(self.name).inc()
        if str(exc) != self.failure:
            self.failure = str(exc)
            log.error("%s cannot use the store (%s); it will keep trying", self.name, exc)

    def worked(self) -> None:
        if self.failure is not None:
            log.warning("%s can use the store again", self.name)
        self.failure, self.failures = None, 0

    def poll_s(self, normal_s: float) -> float:
        """How long to wait before looking again: longer while the store keeps failing."""
        if not self.failures:
            return normal_s
        return min(self.MAX_BACKOFF_S, normal_s * 2.0 ** min(self.failures, 16))


class Slot(Generic[T]):
    """Room a loop keeps for one item that a write of this process leases to it (the store's
    `Offer`): `take` starts the item as if it had been claimed; `close` gives the room back if
    nothing was taken (whoever asked for the slot closes it, taken or not)."""

    def __init__(self, loop: ClaimLoop, owner: str, lease_s: float, start: Callable[[T], None]) -> None:
        self._loop = loop
        self.owner = owner
        self.lease_s = lease_s
        self._start = start
        self._open = True
        self._taken = False

    @property
    def taken(self) -> bool:
        return self._taken

    def take(self, item: T, /) -> None:
        if self._open:
            self._taken = True
            self._open = False
            self._loop._reserved -= 1
            self._start(item)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop._reserved -= 1
            self._loop._wake.set()  # the room is free again: the loop may claim with it


class ClaimLoop(ABC):
    """Claims up to `capacity` items at a time and runs each as a task until stopped or idle."""

    def __init__(self, *, capacity: int, poll_s: float) -> None:
        self.capacity = capacity
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.store_health = StoreHealth(type(self).__name__)
        self._reserved = 0  # slots handed out and not yet taken or closed
        self._room = 0  # how many more items the last round admitted than it found to claim
        # Whether the store may hold due items this loop has not looked for since: while it may,
        # new items are not handed over (they would pass the older ones by), they are claimed.
        self._backlog = True
        self._wakes = 0
        # The context items run in: the loop's own, also for an item handed over from inside a
        # request or a batch (whose context, a trace's span say, is not the item's).
        self._context = contextvars.copy_context()

    def wake(self) -> None:
        """Something new may be due: claim now instead of at the next poll."""
        self._wakes += 1
        self._backlog = True
        self._wake.set()

    def _free(self) -> int:
        return self.capacity - len(self._tasks) - self._reserved + self._parked()

    def _slot(self, owner: str, lease_s: float, start: Callable[[T], None]) -> Slot[T] | None:
        """Room for one item handed over now, or None: this loop is stopping, has items waiting in
        the store to claim first, or has no room now. Items handed over take the room the last
        round admitted and found nothing to claim for, and only while `_admit` still allows one:
        what a loop takes, it takes at the pace its admission sets, claimed or handed over."""
        if self._stopping or self._backlog or self._room <= 0:
            return None
        free = self._free()
        if free <= 0 or self._admit(free) <= 0:
            return None
        self._room -= 1
        self._reserved += 1
        return Slot(self, owner, lease_s, start)

    def _run_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine, context=self._context.copy())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    @abstractmethod
    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        """Claims up to `limit` items and returns the coroutines that work on them."""

    def _parked(self) -> int:
        """Items running that wait on something else and need not count against the capacity."""
        return 0

    def _admit(self, free: int) -> int:
        """How many of the `free` slots to fill now: all of them, unless the loop says otherwise."""
        return free

    async def _idle_wait_s(self) -> float | None:
        """How long to wait when nothing was claimed; None means there is nothing left to do at all."""
        return None

    async def run(self, *, until_idle: bool = False) -> None:
        """Works until `stop()`; with `until_idle`, returns once nothing is running or left to do."""
        self._context = contextvars.copy_context()
        while not self._stopping:
            self._wake.clear()
            free = self._free()
            admitted = self._admit(free) if free > 0 else 0
            started = await self._start(admitted) if admitted > 0 else 0
            self._room = admitted - started
            if started and started == free:
                continue  # there may be more waiting
            wait_s = self.poll_s if self._tasks else await self._idle_wait_s_safe()
            if until_idle and not self._tasks and wait_s is None:
                return
            poll_s = self.store_health.poll_s(self.poll_s)
            if admitted < free and started == admitted:  # held back: look again once the load shows
                poll_s = min(poll_s, ADMIT_AGAIN_S)
            await self._wait(poll_s if wait_s is None else min(wait_s, poll_s))

    async def _idle_wait_s_safe(self) -> float | None:
        try:
            due = await self._idle_wait_s()
        except StoreError as exc:
            self.store_health.failed(exc)
            return self.poll_s
        self.store_health.worked()
        return due

    async def _start(self, limit: int) -> int:
        wakes = self._wakes
        try:
            work = await self._claim(limit)
        except StoreError as exc:
            self.store_health.failed(exc)
            return 0
        self.store_health.worked()
        if len(work) < limit and self._wakes == wakes:
            self._backlog = False  # it took all there was, and nothing new was said to be due since
        for coroutine in work:
            self._run_task(coroutine)
        return len(work)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", type(self).__name__, exc_info=task.exception())
        self._wake.set()

    async def _wait(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def stop(self, *, grace_s: float) -> None:
        """Stops claiming, lets running items finish their current step, then cancels what is left."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
