"""What an operator may see and do, across every account: the use cases behind the console, the
admin JSON API and the `batchgate batches` and `deliveries` commands. Every change is written to
the audit log with who asked for it.

No HTTP here: the admin listener and the command line both call this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchgate import metrics
from batchgate.batches import status_of
from batchgate.models import (
    ApiKey,
    Attempt,
    AuditEntry,
    Batch,
    BatchStatus,
    DeliveryView,
    JobView,
    Overview,
    WorkerView,
)
from batchgate.protocol.errors import NOT_RUN_CANCELLED, BatchgateError
from batchgate.store import Store
from batchgate.store.base import Change, DeliveryState

ALIVE_WITHIN_S = 90.0  # a worker not heard from for this long is gone (heartbeats come every lease/3)


class AdminError(BatchgateError, ValueError):
    """What an operator asked for cannot be done (a finished batch cancelled, nothing to restart...)."""


class AdminNotFound(AdminError):
    """What an operator named does not exist (no such batch, failed delivery or active key)."""


@dataclass(frozen=True, slots=True)
class BatchDetail:
    batch: Batch
    jobs: list[JobView]
    deliveries: list[DeliveryView]
    attempts: list[Attempt]
    callback: DeliveryState | None  # the newest delivery's state

    def status(self) -> dict[str, Any]:
        """The batch's status object, as the public `status` action answers it."""
        return status_of(self.batch, self.callback)


@dataclass(frozen=True, slots=True)
class System:
    overview: Overview
    workers: list[WorkerView]


class AdminService:
    def __init__(
        self,
        store: Store,
        *,
        on_submit: Callable[[], None] = lambda: None,
        on_delivery_queued: Callable[[], None] = lambda: None,
        on_cancel: Callable[[str], None] = lambda _batch_id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.on_submit = on_submit
        self.on_delivery_queued = on_delivery_queued
        self.on_cancel = on_cancel
        self.clock = clock

    # reads -------------------------------------------------------------------
    async def batches(
        self,
        *,
        account: str | None = None,
        status: BatchStatus | None = None,
        since: float | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Batch]:
        return await self.store.find_batches(
            account=account, status=status, since=since, limit=limit, before=before
        )

    async def batch(self, batch_id: str) -> BatchDetail:
        batch = await self.store.find_batch(batch_id)
        if batch is None:
            raise AdminNotFound(f"there is no batch {batch_id}")
        return BatchDetail(
            batch,
            await self.store.job_views(batch_id),
            await self.store.deliveries(batch_id),
            await self.store.attempts(batch_id),
            await self.store.delivery_state(batch_id),
        )

    async def callbacks(self, batches: Sequence[Batch]) -> dict[str, dict[str, Any] | None]:
        """The callback state of each batch, as `status` reports it (None: no callback URL)."""
        states = await self.store.delivery_states([b.id for b in batches if b.callback_url])
        return {b.id: status_of(b, states.get(b.id))["callback"] for b in batches}

    async def failed_deliveries(
        self, *, limit: int = 50, before: tuple[float, str] | None = None
    ) -> list[DeliveryView]:
        return await self.store.failed_deliveries(limit=limit, before=before)

    async def keys(self) -> list[ApiKey]:
        return await self.store.list_keys()

    async def system(self) -> System:
        return System(await self.store.overview(), await self.store.workers(alive_within_s=ALIVE_WITHIN_S))

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        return await self.store.audit_log(limit=limit)

    async def refresh_gauges(self) -> None:
        """Sets the system's gauges from the store, before a scrape."""
        system = await self.system()
        overview = system.overview
        metrics.QUEUE_DEPTH.set(overview.queued)
        metrics.RUNNING.set(overview.running)
        metrics.OLDEST_QUEUED.set(
            0 if overview.oldest_queued_at is None else self.clock() - overview.oldest_queued_at
        )
        metrics.DELIVERIES_PENDING.set(overview.deliveries_pending)
        metrics.DELIVERIES_FAILED.set(overview.deliveries_failed)
        metrics.WORKERS.set(len(system.workers))

    # changes, each audited ----------------------------------------------------
    async def cancel(self, batch_id: str, *, actor: str) -> Change:
        batch = await self._batch(batch_id)
        change = await self.store.cancel(batch, cancelled=NOT_RUN_CANCELLED)
        if change is Change.FINISHED:
            raise AdminError(f"batch {batch_id} has already finished ({batch.status})")
        if change is Change.REQUESTED:
            self.on_cancel(batch_id)
        elif batch.callback_url:
            self.on_delivery_queued()
        await self.store.audit(actor, "cancel", batch_id, change.value)
        return change

    async def restart(self, batch_id: str, *, failed_only: bool = False, actor: str) -> None:
        batch = await self._batch(batch_id)
        if await self.store.restart(batch, failed_only=failed_only) is Change.NOTHING:
            raise AdminError(f"no job of batch {batch_id} failed: there is nothing to run again")
        self.on_submit()
        await self.store.audit(actor, "restart failed jobs" if failed_only else "restart", batch_id)

    async def repost(self, batch_id: str, *, actor: str) -> None:
        batch = await self._batch(batch_id)
        if not batch.status.finished:
            raise AdminError(f"batch {batch_id} has not finished: its callback is sent when it does")
        if await self.store.repost(batch) is Change.NOTHING:
            raise AdminError(f"batch {batch_id} has no callback URL")
        self.on_delivery_queued()
        await self.store.audit(actor, "repost", batch_id)

    async def redeliver(self, delivery_id: str, *, actor: str) -> None:
        if not await self.store.redeliver(delivery_id):
            raise AdminNotFound(f"there is no failed delivery {delivery_id}")
        self.on_delivery_queued()
        await self.store.audit(actor, "redeliver", delivery_id)

    async def redeliver_all(self, *, actor: str) -> int:
        """Every failed delivery, sent again; returns how many."""
        count = 0
        while page := await self.store.failed_deliveries(limit=500):
            for delivery in page:
                count += await self.store.redeliver(delivery.id)
        if count:
            self.on_delivery_queued()
        await self.store.audit(actor, "redeliver all failed", "*", f"{count} deliveries")
        return count

    async def create_key(self, account: str, *, actor: str) -> ApiKey:
        if not account.strip():
            raise AdminError("an account name cannot be empty")
        api_key = await self.store.create_key(account.strip())
        await self.store.audit(actor, "create key", api_key.key, api_key.account)
        return api_key

    async def revoke_key(self, key: str, *, actor: str) -> None:
        if not await self.store.revoke_key(key):
            raise AdminNotFound(f"there is no active key {key}")
        await self.store.audit(actor, "revoke key", key)

    async def rotate_webhook_secret(self, key: str, *, overlap_s: float, actor: str) -> ApiKey:
        rotated = await self.store.rotate_webhook_secret(key, overlap_s=overlap_s)
        if rotated is None:
            raise AdminNotFound(f"there is no active key {key}")
        await self.store.audit(actor, "rotate webhook secret", key, f"overlap {overlap_s:g} s")
        return rotated

    async def _batch(self, batch_id: str) -> Batch:
        batch = await self.store.find_batch(batch_id)
        if batch is None:
            raise AdminNotFound(f"there is no batch {batch_id}")
        return batch


def json_of(value: Any) -> Any:
    """A response or request stored as JSON text, decoded for display (None stays None)."""
    return None if value is None else orjson.loads(value)
