"""The composition root: what one `batchgate serve` or `batchgate worker` process runs, built once.

    store ── batches (the batch namespace)          the API's side
      └──── worker ── deliverer ── purge            the worker's side

Collaborators get the callbacks that wake each other through their constructors: a submit or a
restart wakes the worker, a completed batch or a repost wakes the deliverer, and the store's
notifications (PostgreSQL) wake both when another process queued the work. Where the worker (or
the deliverer) has room now, a new batch (a completed batch's callback) is leased to it in the
transaction that saves it and handed over, which needs no wake-up at all: `worker.offer` goes to
the batch namespace, `deliverer.offer` to the worker. Nothing here knows
HTTP: `batchgate.server` serves a Service, and `batchgate worker` runs one without it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from batchgate import metrics, tracing
from batchgate.actions import App
from batchgate.actions.testing import builtin_actions
from batchgate.admin.service import AdminService
from batchgate.batches import Batches, Limits
from batchgate.delivery import Deliverer
from batchgate.destinations import Destinations
from batchgate.netguard import AddressPolicy
from batchgate.retry import RetryPolicy
from batchgate.settings import Settings
from batchgate.store import Store, StoreError, open_store
from batchgate.vault import Vault
from batchgate.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    app: App  # the built-in actions, the user's and the forwarded namespaces
    store: Store
    batches: Batches
    admin: AdminService
    worker: Worker | None = None
    deliverer: Deliverer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, app: App | None = None, *, run_worker: bool = True) -> Service:
        """Everything the process runs; `run_worker=False` is an API process only."""
        metrics.AccountLabel.by_account = settings.metrics_accounts
        actions = App(
            timeout_s=settings.job_timeout_s,
            threads=settings.action_threads,
            processes=settings.action_processes,
        )
        actions.include(builtin_actions(sleep_cap_s=settings.sleep_cap_s))
        if app is not None:
            actions.include(app)
        store = open_store(settings.db, result_ttl_s=settings.result_ttl_s, vault=Vault(settings.server_key))
        policy = AddressPolicy.from_spec(settings.callback_allow)
        worker = deliverer = None
        if run_worker:
            deliverer = Deliverer(
                store,
                policy=policy,
                retry=RetryPolicy(settings.callback_retry_schedule, settings.retry_after_cap_s),
                timeout_s=settings.callback_timeout_s,
                concurrency=settings.callback_concurrency,
                poll_s=settings.poll_s,
                destinations=Destinations(
                    per_destination=settings.callback_per_destination,
                    threshold=settings.callback_breaker_threshold,
                    first_cooldown_s=settings.callback_breaker_cooldown_s,
                ),
            )
            worker = Worker(
                store,
                actions,
                max_batches=settings.max_batches,
                lease_s=settings.lease_s,
                poll_s=settings.poll_s,
                on_delivery_queued=deliverer.wake,
                offer_delivery=deliverer.offer,
            )
        batches = Batches(
            store,
            policy,
            limits=Limits(
                open_batches=settings.max_open_batches,
                result_bytes=settings.max_result_bytes,
                reposts_per_hour=settings.reposts_per_hour,
                concurrency=settings.max_concurrency,
                idempotency_ttl_s=settings.idempotency_ttl_s,
            ),
            offer_lease=worker.offer if worker else _no_room,
            on_submit=worker.wake if worker else _nobody,
            on_delivery_queued=deliverer.wake if deliverer else _nobody,
            on_cancel=worker.cancel if worker else _nobody_here,
        )
        admin = AdminService(
            store,
            on_submit=worker.wake if worker else _nobody,
            on_delivery_queued=deliverer.wake if deliverer else _nobody,
            on_cancel=worker.cancel if worker else _nobody_here,
        )
        return cls(settings, actions, store, batches, admin, worker, deliverer)

    async def start(self) -> None:
        if self.settings.otel:
            tracing.setup()
        await self.store.open()
        for advice in self.store.advice():
            log.warning(advice)
        await self.store.check_vault()
        await self.app.startup()
        if self.worker is None or self.deliverer is None:
            return
        await self.deliverer.open()
        await self.store.listen(
            on_batches=self.worker.wake, on_deliveries=self.deliverer.wake, on_cancel=self.worker.cancel
        )
        self._tasks = [
            asyncio.create_task(loop)
            for loop in (self.worker.run(), self.deliverer.run(), self._purge_periodically())
        ]

    async def stop(self) -> None:
        if self.worker is not None and self.deliverer is not None:
            await asyncio.gather(self.worker.stop(), self.deliverer.stop(grace_s=5.0))
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.deliverer.close()
        await self.app.shutdown()
        await self.store.close()
        if self.settings.otel:
            tracing.stop()  # the spans of the last batches and callbacks exported

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_every_s)
            try:
                purged = await self.store.purge()
            except StoreError as exc:
                log.warning("could not purge expired batches (%s); trying again later", exc)
                continue
            if purged:
                log.info("purged %d expired batches", purged)


def _nobody() -> None:
    """A wake-up nobody listens to: an API process without a worker relies on the store's notifications."""


def _no_room(namespace: str) -> None:
    """No worker in this process: a batch is saved queued, for the worker processes to claim."""


def _nobody_here(batch_id: str) -> None:
    """A cancel with no worker in this process: the worker running the batch hears of it through a
    notification or its heartbeat."""
