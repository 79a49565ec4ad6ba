"""The store contract. Public methods own ids, timestamps and state transitions; the backends
implement only the small `_hooks` below them.

    StoreError
     └── StoreUnavailable    the database could not be reached or refused the write

Drivers' exceptions never leave a backend: each translates them into these.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from batchgate.models import (
    ApiKey,
    Attempt,
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    JobResult,
    JobSpec,
    Lease,
    Recorded,
)
from batchgate.protocol.errors import BatchgateError


class StoreError(BatchgateError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The database could not be reached or refused the write."""


def new_id() -> str:
    """32 lowercase hex characters from 128 random bits (asyncIds, webhook-ids)."""
    return secrets.token_hex(16)


def batch_from_row(row: Sequence[Any]) -> Batch:
    """A Batch from the columns every backend's `get_batch` selects, in the model's order."""
    batch_id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at = row
    return Batch(
        id=batch_id,
        account=account,
        key=key,
        callback_url=callback_url,
        job_count=job_count,
        done_count=done_count,
        status=BatchStatus(status),
        run=run,
        created_at=created_at,
        completed_at=completed_at,
    )


class Store(ABC):
    """Keys, batches with their jobs, and the callback outbox."""

    def __init__(self, *, result_ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.result_ttl_s = result_ttl_s
        self.clock = clock

    # lifecycle -------------------------------------------------------------
    @abstractmethod
    async def open(self) -> list[int]:
        """Connects and applies pending schema migrations; returns the versions it applied."""

    @abstractmethod
    async def close(self) -> None: ...

    async def listen(self, *, on_batches: Callable[[], None], on_deliveries: Callable[[], None]) -> None:
        """Calls back when another process queues work; a backend without notifications relies on polling."""
        return None

    # keys ------------------------------------------------------------------
    async def create_key(self, account: str) -> ApiKey:
        api_key = ApiKey(
            key=secrets.token_hex(16),
            secret=secrets.token_urlsafe(32),
            account=account,
            created_at=self.clock(),
        )
        await self._insert_key(api_key)
        return api_key

    @abstractmethod
    async def _insert_key(self, api_key: ApiKey) -> None: ...

    @abstractmethod
    async def get_key(self, key: str) -> ApiKey | None: ...

    @abstractmethod
    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, key: str) -> bool:
        """Revokes a key; False when there is no such active key."""
        return await self._revoke_key(key, self.clock())

    @abstractmethod
    async def _revoke_key(self, key: str, now: float) -> bool: ...

    # batches, as the API sees them -----------------------------------------
    async def submit(self, api_key: ApiKey, jobs: Sequence[JobSpec], callback_url: str | None) -> Batch:
        """Commits a batch and all its jobs in one transaction and returns it, queued."""
        batch = Batch(
            id=new_id(),
            account=api_key.account,
            key=api_key.key,
            callback_url=callback_url,
            job_count=len(jobs),
            done_count=0,
            status=BatchStatus.QUEUED,
            run=1,
            created_at=self.clock(),
        )
        await self._insert_batch(batch, jobs)
        return batch

    @abstractmethod
    async def _insert_batch(self, batch: Batch, jobs: Sequence[JobSpec]) -> None: ...

    async def get_batch(self, account: str, batch_id: str) -> Batch | None:
        """The account's batch, or None when it does not exist, is another's, or has expired."""
        return await self._get_batch(account, batch_id, self.clock())

    @abstractmethod
    async def _get_batch(self, account: str, batch_id: str, now: float) -> Batch | None: ...

    @abstractmethod
    async def job_results(self, batch_id: str) -> list[JobResult]:
        """Every job of a batch in order, with its response (None while it has not run)."""

    async def restart(self, batch: Batch) -> None:
        """Queues every job of the batch to run again; a worker running it loses its lease, and a
        callback still waiting to be sent for the previous run is superseded by the next run's."""
        await self._restart(batch.id)

    @abstractmethod
    async def _restart(self, batch_id: str) -> None: ...

    async def repost(self, batch: Batch) -> bool:
        """Queues a new delivery (a new webhook-id) of a complete batch's results; False when the
        batch has no callback URL."""
        if not batch.callback_url:
            return False
        await self._insert_delivery(new_id(), batch.id, self.clock())
        return True

    @abstractmethod
    async def _insert_delivery(self, delivery_id: str, batch_id: str, now: float) -> None: ...

    # batches, as the worker sees them --------------------------------------
    async def claim_batches(self, owner: str, *, limit: int, lease_s: float) -> list[Lease]:
        """Leases up to `limit` runnable batches: queued ones, and running ones whose lease expired."""
        return await self._claim_batches(owner, limit, self.clock(), lease_s)

    @abstractmethod
    async def _claim_batches(self, owner: str, limit: int, now: float, lease_s: float) -> list[Lease]: ...

    async def record(
        self, lease: Lease, first: int, responses: Sequence[bytes], *, lease_s: float
    ) -> Recorded:
        """Records the responses of jobs `first`, `first + 1`, ... under the lease.

        The record that brings the batch to its last job completes it: the batch's results expire
        `result_ttl_s` later, and its callback is queued in the same transaction. Any other record
        renews the lease. Nothing is written when the lease was lost (the batch was restarted, or
        its lease expired and another worker took it)."""
        texts = [response.decode() for response in responses]
        now = self.clock()
        if first + len(texts) < lease.job_count:
            advanced = await self._advance(lease, first, texts, until=now + lease_s)
            return Recorded.ADVANCED if advanced else Recorded.LOST
        delivery_id = new_id() if lease.callback_url else None
        completed = await self._complete(
            lease, first, texts, now=now, expires_at=now + self.result_ttl_s, delivery_id=delivery_id
        )
        return Recorded.COMPLETED if completed else Recorded.LOST

    @abstractmethod
    async def _advance(self, lease: Lease, first: int, responses: list[str], *, until: float) -> bool:
        """Writes the responses and moves the lease to `until`, fenced by the lease token."""

    @abstractmethod
    async def _complete(
        self,
        lease: Lease,
        first: int,
        responses: list[str],
        *,
        now: float,
        expires_at: float,
        delivery_id: str | None,
    ) -> bool:
        """Writes the last responses, completes the batch at `now` with its results readable until
        `expires_at`, drops the lease and, given `delivery_id`, queues the callback; one
        transaction, fenced by the lease token."""

    async def renew(self, tokens: Sequence[str], *, lease_s: float) -> None:
        """Extends the leases that are still held."""
        if tokens:
            await self._renew(tokens, self.clock() + lease_s)

    @abstractmethod
    async def _renew(self, tokens: Sequence[str], until: float) -> None: ...

    async def release(self, tokens: Sequence[str]) -> None:
        """Gives leases up at once (on shutdown), so their batches are claimed again without waiting."""
        if tokens:
            await self._renew(tokens, 0.0)

    # the callback outbox ---------------------------------------------------
    async def claim_deliveries(self, *, limit: int, lease_s: float) -> list[Delivery]:
        """Leases up to `limit` pending deliveries that are due."""
        return await self._claim_deliveries(limit, self.clock(), lease_s)

    @abstractmethod
    async def _claim_deliveries(self, limit: int, now: float, lease_s: float) -> list[Delivery]: ...

    async def finish_attempt(
        self, delivery: Delivery, attempt: Attempt, retry_in_s: float | None, final: DeliveryStatus
    ) -> None:
        """Records an attempt; the delivery is due again in `retry_in_s`, or ends with `final`."""
        if retry_in_s is None:
            await self._finish_attempt(delivery, attempt, final, None)
        else:
            await self._finish_attempt(delivery, attempt, DeliveryStatus.PENDING, attempt.at + retry_in_s)

    @abstractmethod
    async def _finish_attempt(
        self, delivery: Delivery, attempt: Attempt, status: DeliveryStatus, next_at: float | None
    ) -> None: ...

    @abstractmethod
    async def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery is due, or None when there is none."""

    @abstractmethod
    async def attempts(self, batch_id: str) -> list[Attempt]:
        """Every delivery attempt for a batch, oldest first."""

    # housekeeping ----------------------------------------------------------
    async def purge(self) -> int:
        """Deletes batches whose results have expired; returns how many."""
        return await self._purge(self.clock())

    @abstractmethod
    async def _purge(self, now: float) -> int: ...
