"""The worker: leases batches, runs each batch's jobs one after another in order, records every
response, and lets the store complete the batch with its last job.

A lease is renewed by every recorded job and by a heartbeat; a worker that dies stops renewing,
and once the lease expires any worker claims the batch again and resumes after its last recorded
job. A job is therefore run at least once; `ActionContext.idempotency_key` lets an action tell a
repeat from a new call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from batchgate.actions import ActionContext, Gateway
from batchgate.loops import ClaimLoop, owner_id
from batchgate.models import Lease
from batchgate.store import Store, StoreError

log = logging.getLogger(__name__)


class Worker(ClaimLoop):
    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        *,
        max_batches: int = 50,
        lease_s: float = 30.0,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__(capacity=max_batches, poll_s=poll_s)
        self.store = store
        self.gateway = gateway
        self.lease_s = lease_s
        self.owner = owner_id("worker")
        self._held: set[str] = set()

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        leases = await self.store.claim_batches(self.owner, limit=limit, lease_s=self.lease_s)
        self._held.update(lease.token for lease in leases)
        return [self._run_batch(lease) for lease in leases]

    async def _run_batch(self, lease: Lease) -> None:
        try:
            for offset, job in enumerate(lease.jobs):
                if self._stopping:
                    return
                index = lease.start + offset
                ctx = ActionContext(
                    account=lease.account, async_id=lease.batch_id, job_index=index, run=lease.run
                )
                response = await self.gateway.run_job(job.namespace, job.action, job.params, ctx)
                if not await self.store.record(lease, index, response, lease_s=self.lease_s):
                    log.info("batch %s: lease lost (restarted or expired); leaving it", lease.batch_id)
                    break
            self._held.discard(lease.token)
        except StoreError:
            # Not recorded: the lease runs out and the batch resumes from its last recorded job.
            log.exception("batch %s: could not record a job; it will be resumed", lease.batch_id)
            self._held.discard(lease.token)

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
