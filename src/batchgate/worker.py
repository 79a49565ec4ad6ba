"""The worker: leases batches, runs each batch's jobs one after another in order, records every
response, and lets the store complete the batch with its last job.

A lease is renewed by every write of responses and by a heartbeat; a worker that dies stops renewing,
and once the lease expires any worker claims the batch again and resumes after its last recorded
job. A job is therefore run at least once; `ActionContext.idempotency_key` lets an action tell a
repeat from a new call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from batchgate.actions import ActionContext, App
from batchgate.loops import ClaimLoop, owner_id
from batchgate.models import Lease, Recorded
from batchgate.protocol.errors import BatchgateError
from batchgate.store import Store, StoreError

log = logging.getLogger(__name__)


class LeaseLost(BatchgateError):
    """The batch was restarted, or its lease expired and another worker took it."""


class _Recorder:
    """Writes one batch's responses behind its jobs, in order, one write in flight at a time.

    Each write takes every response finished while the previous one was being written, and the
    next write starts as soon as the previous one returns: fast jobs share a transaction, and a
    finished job is saved without waiting for the next one to finish."""

    def __init__(self, store: Store, lease: Lease, lease_s: float, on_completed: Callable[[], None]) -> None:
        self.store, self.lease, self.lease_s = store, lease, lease_s
        self.on_completed = on_completed
        self.next_index = lease.start
        self.pending: list[bytes] = []
        self.writing: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raises what the last finished write met (LeaseLost, StoreError), so a batch taken away
        stops at the next job rather than at the end."""
        if self.writing is not None and self.writing.done():
            self.writing.result()

    def add(self, response: bytes) -> None:
        self.check()
        self.pending.append(response)
        if self.writing is None or self.writing.done():
            self.writing = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        while self.pending:
            first, responses = self.next_index, self.pending
            self.next_index, self.pending = first + len(responses), []
            recorded = await self.store.record(self.lease, first, responses, lease_s=self.lease_s)
            if recorded is Recorded.LOST:
                raise LeaseLost(self.lease.batch_id)
            if recorded is Recorded.COMPLETED and self.lease.callback_url:
                self.on_completed()

    async def flush(self) -> None:
        if self.writing is not None:
            await self.writing


class Worker(ClaimLoop):
    def __init__(
        self,
        store: Store,
        app: App,
        *,
        max_batches: int = 50,
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        on_delivery_queued: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(capacity=max_batches, poll_s=poll_s)
        self.store = store
        self.app = app
        self.lease_s = lease_s
        self.on_delivery_queued = on_delivery_queued  # wakes this process's delivery loop
        self.owner = owner_id("worker")
        self._held: set[str] = set()

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        leases = await self.store.claim_batches(self.owner, limit=limit, lease_s=self.lease_s)
        self._held.update(lease.token for lease in leases)
        return [self._run_batch(lease) for lease in leases]

    async def _run_batch(self, lease: Lease) -> None:
        try:
            await self._run_jobs(lease)
        except StoreError:
            # Not recorded: the lease runs out and the batch resumes from its last recorded job.
            log.exception("batch %s: could not record jobs; it will be resumed", lease.batch_id)
        except LeaseLost:
            log.info("batch %s: lease lost (restarted, or expired and taken); leaving it", lease.batch_id)
        except Exception:
            # A bug: stop renewing, so the batch resumes once the lease runs out (any worker may
            # take it then) instead of being held, and retried, here forever.
            log.exception("batch %s failed unexpectedly; it resumes when its lease expires", lease.batch_id)
        finally:
            if not self._stopping:  # a stopping worker hands its leases back at once in stop()
                self._held.discard(lease.token)

    async def _run_jobs(self, lease: Lease) -> None:
        """Runs the jobs in order while their responses are written behind them."""
        recorder = _Recorder(self.store, lease, self.lease_s, self.on_delivery_queued)
        for offset, job in enumerate(lease.jobs):
            if self._stopping:
                break
            recorder.check()
            index = lease.start + offset
            ctx = ActionContext(
                account=lease.account, async_id=lease.batch_id, job_index=index, run=lease.run
            )
            recorder.add(await self.app.run_job(job.namespace, job.action, job.params, ctx))
            await asyncio.sleep(0)  # a job that never awaits must not keep other batches and the API waiting
        await recorder.flush()

    async def run(self, *, until_idle: bool = False) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await super().run(until_idle=until_idle)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.store.renew(list(self._held), lease_s=self.lease_s)
            except StoreError:
                log.exception("could not renew leases")

    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Finishes the jobs in progress, then gives the unfinished batches back at once."""
        await super().stop(grace_s=grace_s)
        if self._held:
            try:
                await self.store.release(list(self._held))
            except StoreError:
                log.exception("could not release leases; they will expire")
            self._held.clear()
