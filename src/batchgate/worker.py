"""The worker: leases batches and runs each one (`runner.BatchRun`), beside a heartbeat that keeps
its leases and hears of cancels.

A lease is renewed by every write of responses and by the heartbeat; a worker that dies stops
renewing, and once the lease expires any worker claims the batch again and resumes with the jobs
not yet recorded. A job is therefore run at least once; `ActionContext.idempotency_key` lets an
action tell a repeat from a new call.

Batches come to a worker two ways: claimed from the store, or, when this process accepted them
while the worker had room (`offer`), leased to it in the transaction that saved them and handed
over at once. Both are the same lease from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from batchgate import metrics
from batchgate.actions import App
from batchgate.load import LoopLag
from batchgate.loops import ClaimLoop, Slot, owner_id
from batchgate.models import Delivery, Lease
from batchgate.runner import BatchRun, LeaseLost
from batchgate.store import Store, StoreError

log = logging.getLogger(__name__)


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
        offer_delivery: Callable[[str], Slot[Delivery] | None] = lambda _url: None,
    ) -> None:
        super().__init__(capacity=max_batches, poll_s=poll_s)
        self.store = store
        self.app = app
        self.lease_s = lease_s
        self.on_delivery_queued = on_delivery_queued  # wakes this process's delivery loop
        self.offer_delivery = offer_delivery  # ... or hands it a completed batch's callback directly
        self.owner = owner_id("worker")
        self._held: set[str] = set()
        self._runs: dict[str, BatchRun] = {}
        self.load = LoopLag()

    def cancel(self, batch_id: str) -> None:
        """The client asked to cancel a batch: stops it if this worker runs it."""
        run = self._runs.get(batch_id)
        if run is not None:
            run.cancel()

    def _parked(self) -> int:
        """Batches waiting on an upstream that is full do not hold a slot (as many as there are slots,
        so that a slow upstream holds at most half of what this worker runs)."""
        return min(self.capacity, sum(run.parked for run in self._runs.values()))

    def _admit(self, free: int) -> int:
        """Takes batches in step with what this process can run: while it has room, at most as many
        again as it runs (one to begin with), and none while it is busy, unless it runs none.
        (A batch offered room at submit counts as running.) On a store only one host uses, no
        other host's worker could run what this one leaves, so it takes all it has room for: the
        more batches run together, the more of their writes share a commit."""
        running = len(self._runs) + self._reserved - self._parked()
        if running <= 0:
            return 1
        if self.app.threads_full:
            return 0
        if self.store.one_host:
            return free
        return 0 if self.load.busy else min(free, running)

    def offer(self, namespace: str) -> Slot[Lease] | None:
        """Room for a batch this process is about to save, whose first job is in `namespace`: the
        store leases the batch to this worker as it saves it, and hands the lease over (`take`).
        None when the worker would not claim it now: no room, busy, stopping, older batches
        waiting in the store, or that namespace's upstream full."""
        if self.app.busy(namespace):
            return None
        return self._slot(self.owner, self.lease_s, self._take)

    def _take(self, lease: Lease) -> None:
        self._held.add(lease.token)
        if self._stopping:  # saved as the worker stops: stop() hands it back with the others
            return
        self._run_task(self._run_batch(lease))

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        leases = await self.store.claim_batches(
            self.owner, limit=limit, lease_s=self.lease_s, skip_namespaces=self.app.busy_namespaces()
        )
        self._held.update(lease.token for lease in leases)
        return [self._run_batch(lease) for lease in leases]

    def _run_batch(self, lease: Lease) -> Coroutine[Any, Any, None]:
        """The batch's run, known (to a cancel) from now on; the coroutine runs it."""
        run = BatchRun(
            self.store,
            self.app,
            lease,
            lease_s=self.lease_s,
            stopping=lambda: self._stopping,
            on_completed=self.on_delivery_queued,
            on_parked=self.wake,
            offer_delivery=self.offer_delivery,
        )
        self._runs[lease.batch_id] = run
        return self._running(lease, run)

    async def _running(self, lease: Lease, run: BatchRun) -> None:
        try:
            await run.run()
        except StoreError as exc:
            # Not recorded: the lease runs out and the batch resumes from its last recorded job.
            self.store_health.failed(exc)
            log.warning(
                "batch %s: could not record its jobs; it resumes when its lease expires", lease.batch_id
            )
        except LeaseLost:
            log.info("batch %s: lease lost (restarted, or expired and taken); leaving it", lease.batch_id)
        except Exception:
            # A bug: stop renewing, so the batch resumes once the lease runs out (any worker may
            # take it then) instead of being held, and retried, here forever.
            log.exception("batch %s failed unexpectedly; it resumes when its lease expires", lease.batch_id)
        finally:
            if self._runs.get(lease.batch_id) is run:
                del self._runs[lease.batch_id]
            if not self._stopping:  # a stopping worker hands its leases back at once in stop()
                self._held.discard(lease.token)

    async def run(self, *, until_idle: bool = False) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        self.load.start()
        try:
            await super().run(until_idle=until_idle)
        finally:
            heartbeat.cancel()
            self.load.stop()
            with contextlib.suppress(StoreError):
                await self.store.forget_worker(self.owner)

    async def _heartbeat(self) -> None:
        """Renews the leases held, and hears of cancels asked of them (without notifications, or
        from another process on the same SQLite file, this is how a cancel gets here)."""
        while True:
            try:
                await self._say_alive()
                for batch_id in await self.store.renew(list(self._held), lease_s=self.lease_s):
                    self.cancel(batch_id)
            except StoreError as exc:
                self.store_health.failed(exc)
            await asyncio.sleep(self.lease_s / 3)

    async def _say_alive(self) -> None:
        """Tells the store (and so the console) that this worker lives, and which batches it holds."""
        metrics.LEASES_HELD.set(len(self._held))
        await self.store.note_worker(
            self.owner, role="worker", host=socket.gethostname(), pid=os.getpid(), holding=list(self._runs)
        )

    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Finishes the jobs in progress, then gives the unfinished batches back at once."""
        await super().stop(grace_s=grace_s)
        if self._held:
            try:
                await self.store.release(list(self._held))
            except StoreError:
                log.exception("could not release leases; they will expire")
            self._held.clear()
