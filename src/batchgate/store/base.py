"""The store contract. Public methods own ids, timestamps, secrets at rest and state transitions;
the backends implement only the small `_hooks` below them.

    StoreError
     └── StoreUnavailable    the database could not be reached or refused the write

Drivers' exceptions never leave a backend: each translates them into these.
"""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Protocol, TypeVar

from batchgate import webhooks
from batchgate.models import (
    OUTCOMES,
    ApiKey,
    Attempt,
    AuditEntry,
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    DeliveryView,
    Finished,
    JobResult,
    JobSpec,
    JobView,
    Lease,
    Overview,
    Recorded,
    WorkerView,
)
from batchgate.protocol.errors import BatchgateError
from batchgate.vault import Vault


class StoreError(BatchgateError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The database could not be reached or refused the write."""


def new_id() -> str:
    """32 lowercase hex characters from 128 random bits (asyncIds, webhook-ids)."""
    return secrets.token_hex(16)


def new_token() -> str:
    """A lease token: 32 hex characters, the time it is made (in ns) then 64 random bits. Tokens in
    the order they are made go at the end of the lease index, together, not each on its own page."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


BATCH_COLUMNS = 16  # what every backend selects for a Batch, in the model's order


def batch_from_row(row: Sequence[Any]) -> Batch:
    """A Batch from the columns every backend selects for one (BATCH_COLUMNS), in the model's order."""
    values = list(row[:BATCH_COLUMNS])
    values[6] = BatchStatus(values[6])
    return Batch(*values)


def job_result_from_row(row: Sequence[Any]) -> JobResult:
    """(namespace, action, params as run, response, outcome)."""
    namespace, action, params, response, outcome = row
    return JobResult(namespace, action, params, response, outcome and OUTCOMES[outcome])


def lease_from_rows(batch: Sequence[Any], jobs: Sequence[Sequence[Any]]) -> Lease:
    """A Lease from the claimed batch (id, account, callback_url, run, token, job_count,
    concurrency, cancel requested, traceparent) and every one of its jobs (idx, namespace, action,
    params, key, depends_on as a JSON array or None, outcome)."""
    batch_id, account, callback_url, run, token, job_count, concurrency, cancel_requested, traceparent = batch
    pending, outcomes, keys = {}, {}, {}
    for index, namespace, action, params, key, depends_on, outcome in jobs:
        if key is not None:
            keys[key] = index
        if outcome is None:
            waits = tuple(json.loads(depends_on)) if depends_on else ()
            pending[index] = JobSpec(namespace, action, params, key, waits)
        else:
            outcomes[index] = OUTCOMES[outcome]
    return Lease(
        batch_id=batch_id,
        account=account,
        callback_url=callback_url,
        run=run,
        token=token,
        job_count=job_count,
        jobs=pending,
        outcomes=outcomes,
        keys=keys,
        concurrency=concurrency,
        cancel_requested=bool(cancel_requested),
        traceparent=traceparent,
    )


def delivery_from_row(row: Sequence[Any], token: str) -> Delivery:
    """(id, batch_id, url, body, attempts, destination, webhook secret, API secret, the previous
    webhook secret while it still signs, the batch's created_at): a key made before webhook secrets
    signs with its API secret."""
    delivery_id, batch_id, url, body, attempts, destination, webhook_secret, secret, previous, created = row
    signing = (webhook_secret or secret, *([previous] if previous else []))
    return Delivery(
        id=delivery_id,
        batch_id=batch_id,
        url=url,
        secrets=signing,
        attempts=attempts,
        token=token,
        body=None if body is None else bytes(body),
        destination=destination,
        batch_created_at=created,
    )


def job_view_from_row(row: Sequence[Any]) -> JobView:
    """(idx, namespace, action, job_key, depends_on, params as run, response, outcome, finished_at,
    duration_ms, attempts)."""
    (
        index,
        namespace,
        action,
        key,
        depends_on,
        request,
        response,
        outcome,
        finished_at,
        duration_ms,
        attempts,
    ) = row
    waits = tuple(json.loads(depends_on)) if depends_on else ()
    return JobView(
        index, namespace, action, key, waits, request, response, outcome and OUTCOMES[outcome],
        finished_at, duration_ms, attempts,
    )  # fmt: skip


def delivery_view_from_row(row: Sequence[Any]) -> DeliveryView:
    """(id, batch_id, account, url, status, attempts, next_at, created_at)."""
    delivery_id, batch_id, account, url, status, attempts, next_at, created_at = row
    return DeliveryView(
        delivery_id, batch_id, account, url, DeliveryStatus(status), attempts, next_at, created_at
    )


def worker_view_from_row(row: Sequence[Any]) -> WorkerView:
    """(id, role, host, pid, started_at, seen_at, holding as a JSON array)."""
    worker_id, role, host, pid, started_at, seen_at, holding = row
    return WorkerView(worker_id, role, host, pid, started_at, seen_at, tuple(json.loads(holding)))


def delivery_state_from_row(row: Sequence[Any]) -> DeliveryState:
    """(status, attempts, next_at, the last attempt's HTTP status)."""
    status, attempts, next_at, last_status = row
    pending = status == DeliveryStatus.PENDING
    return DeliveryState(DeliveryStatus(status), attempts, last_status, next_at if pending else None)


@dataclass(frozen=True, slots=True)
class RequestId:
    """Names a signed request that changes state, which it may do once: the key and the signature
    (which covers the date) identify it, and it is remembered until `expires_at`, when its date
    has left the window in which it would be accepted at all."""

    key: str
    signature: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key of `run`, per account, with a fingerprint of the request it came with."""

    key: str
    fingerprint: str
    expires_at: float


class SubmitOutcome(Enum):
    CREATED = "created"
    REPEATED = "repeated"  # the same signed request, or the same Idempotency-Key and body: the first batch
    CONFLICT = "conflict"  # the Idempotency-Key was used with another body


@dataclass(frozen=True, slots=True)
class Submitted:
    outcome: SubmitOutcome
    batch_id: str | None  # the batch made (or made before); None on a conflict
    lease: Lease | None = None  # the batch made, leased in the same transaction (`lease_to`)


Item = TypeVar("Item", contravariant=True)


class Offer(Protocol[Item]):
    """A place a loop of this process keeps for one item (a batch, a delivery) that is leased to it
    in the transaction that writes the item, instead of being claimed later: the store writes the
    lease (`owner`, a new token, `lease_s` from now) and, once that is committed, hands the item
    over with `take`. An offer the store does not take (the write failed, or made nothing) is
    given back by whoever asked for it."""

    @property
    def owner(self) -> str: ...

    @property
    def lease_s(self) -> float: ...

    def take(self, item: Item, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Leasing:
    """The lease a write gives what it inserts: who holds it, its token, and until when."""

    owner: str
    token: str
    until: float


class Change(Enum):
    """What a state-changing call on a batch did."""

    DONE = "done"
    REPLAYED = "replayed"  # the same signed request was seen before: nothing changed this time
    FINISHED = "finished"  # cancel: the batch had already finished
    REQUESTED = "requested"  # cancel: its worker is asked to stop it
    NOTHING = "nothing"  # restart of failed jobs only: none had failed


@dataclass(frozen=True, slots=True)
class Usage:
    """What an account holds: batches not yet finished, and bytes of results."""

    open_batches: int
    result_bytes: int


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """The newest delivery of a batch's callback, as `status` reports it."""

    status: DeliveryStatus
    attempts: int
    last_status: int | None
    next_attempt_at: float | None


class Store(ABC):
    """Keys, batches with their jobs, and the callback outbox."""

    # Whether every process using the store runs on one host (SQLite: a file on a local disk).
    one_host = False

    def __init__(
        self, *, result_ttl_s: float, clock: Callable[[], float] = time.time, vault: Vault | None = None
    ) -> None:
        self.result_ttl_s = result_ttl_s
        self.clock = clock
        self.vault = vault or Vault()

    # lifecycle -------------------------------------------------------------
    @abstractmethod
    async def open(self) -> list[int]:
        """Connects and applies pending schema migrations; returns the versions it applied."""

    @abstractmethod
    async def close(self) -> None: ...

    def advice(self) -> list[str]:
        """What an operator should change in the database's own settings, found when it opened."""
        return []

    async def listen(
        self,
        *,
        on_batches: Callable[[], None],
        on_deliveries: Callable[[], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        """Calls back when another process queues work or asks a batch to stop; a backend without
        notifications relies on polling and on the workers' heartbeats."""
        return None

    @abstractmethod
    async def probe(self) -> None:
        """Reads and writes (a write that changes nothing): raises StoreError when either fails."""

    # keys ------------------------------------------------------------------
    async def create_key(self, account: str) -> ApiKey:
        api_key = ApiKey(
            key=secrets.token_hex(16),
            secret=secrets.token_urlsafe(32),
            account=account,
            created_at=self.clock(),
            webhook_secret=webhooks.new_secret(),
        )
        await self._insert_key(self._sealed(api_key))
        return api_key

    @abstractmethod
    async def _insert_key(self, api_key: ApiKey) -> None: ...

    async def get_key(self, key: str) -> ApiKey | None:
        found = await self._get_key(key)
        return None if found is None else self._opened(found)

    @abstractmethod
    async def _get_key(self, key: str) -> ApiKey | None: ...

    async def list_keys(self) -> list[ApiKey]:
        return [self._opened(api_key) for api_key in await self._list_keys()]

    @abstractmethod
    async def _list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, key: str) -> bool:
        """Revokes a key; False when there is no such active key."""
        return await self._revoke_key(key, self.clock())

    @abstractmethod
    async def _revoke_key(self, key: str, now: float) -> bool: ...

    async def rotate_webhook_secret(self, key: str, *, overlap_s: float) -> ApiKey | None:
        """Gives an active key a new webhook secret; the one before keeps signing callbacks beside
        it for `overlap_s`, so receivers can switch without losing one. None: no such active key."""
        found = await self.get_key(key)
        if found is None or found.revoked_at is not None:
            return None
        now = self.clock()
        rotated = replace(
            found,
            webhook_secret=webhooks.new_secret(),
            webhook_secret_previous=found.webhook_secret or found.secret,
            webhook_previous_until=now + overlap_s,
        )
        await self._update_webhook_secrets(self._sealed(rotated))
        return rotated

    @abstractmethod
    async def _update_webhook_secrets(self, api_key: ApiKey) -> None: ...

    async def check_vault(self) -> None:
        """Raises VaultError when the stored secrets cannot be read with the server keys given (a
        process started without the key the database was sealed with): better not to start."""
        await self.list_keys()

    async def reseal_secrets(self) -> int:
        """Writes every key's secrets again under the vault's newest key (rotating the server key,
        or encrypting secrets stored before one was set); returns how many keys."""
        keys = await self.list_keys()
        for api_key in keys:
            await self._update_secrets(self._sealed(api_key))
        return len(keys)

    @abstractmethod
    async def _update_secrets(self, api_key: ApiKey) -> None: ...

    def _sealed(self, api_key: ApiKey) -> ApiKey:
        seal = self.vault.seal
        return replace(
            api_key,
            secret=seal(api_key.secret),
            webhook_secret=api_key.webhook_secret and seal(api_key.webhook_secret),
            webhook_secret_previous=api_key.webhook_secret_previous and seal(api_key.webhook_secret_previous),
        )

    def _opened(self, api_key: ApiKey) -> ApiKey:
        unseal = self.vault.unseal
        return replace(
            api_key,
            secret=unseal(api_key.secret),
            webhook_secret=api_key.webhook_secret and unseal(api_key.webhook_secret),
            webhook_secret_previous=api_key.webhook_secret_previous
            and unseal(api_key.webhook_secret_previous),
        )

    # replays -----------------------------------------------------------------
    async def first_use(self, request: RequestId) -> bool:
        """Notes a signed request that is about to change state outside the store (a direct call of
        an action); False when it was seen before."""
        return await self._first_use(request)

    @abstractmethod
    async def _first_use(self, request: RequestId) -> bool: ...

    # batches, as the API sees them -----------------------------------------
    async def submit(
        self,
        api_key: ApiKey,
        jobs: Sequence[JobSpec],
        callback_url: str | None,
        *,
        concurrency: int = 1,
        destination: str | None = None,
        request: RequestId | None = None,
        idempotency: IdempotencyClaim | None = None,
        lease_to: Offer[Lease] | None = None,
        traceparent: str | None = None,
    ) -> Submitted:
        """Commits a batch and all its jobs in one transaction, queued; or, for a request seen
        before (the same signed request, or the same Idempotency-Key and body), nothing: the
        answer names the batch it made. `destination` is the callback's host:port; `traceparent`
        the span of the call that made it, which the worker's span of the batch links to.

        Given `lease_to` (a worker of this process with room now), the batch is written running
        and leased to it, in the same transaction, and handed to it once committed: no claim, no
        wake-up. The lease is a lease like any other: renewed by the worker's writes and
        heartbeat, fenced by a restart, and, should the worker die, left to expire."""
        now = self.clock()
        leasing = None if lease_to is None else Leasing(lease_to.owner, new_token(), now + lease_to.lease_s)
        batch = Batch(
            id=new_id(),
            account=api_key.account,
            key=api_key.key,
            callback_url=callback_url,
            job_count=len(jobs),
            done_count=0,
            status=BatchStatus.QUEUED if leasing is None else BatchStatus.RUNNING,
            run=1,
            created_at=now,
            started_at=None if leasing is None else now,
            concurrency=concurrency,
        )
        submitted = await self._insert_batch(
            batch, jobs, destination, request, idempotency, leasing, traceparent
        )
        if leasing is None or lease_to is None or submitted.outcome is not SubmitOutcome.CREATED:
            return submitted
        lease = Lease(
            batch_id=batch.id,
            account=batch.account,
            callback_url=callback_url,
            run=batch.run,
            token=leasing.token,
            job_count=batch.job_count,
            jobs=dict(enumerate(jobs)),
            keys={job.key: index for index, job in enumerate(jobs) if job.key is not None},
            concurrency=concurrency,
            traceparent=traceparent,
        )
        lease_to.take(lease)
        return replace(submitted, lease=lease)

    @abstractmethod
    async def _insert_batch(
        self,
        batch: Batch,
        jobs: Sequence[JobSpec],
        destination: str | None,
        request: RequestId | None,
        idempotency: IdempotencyClaim | None,
        leasing: Leasing | None,
        traceparent: str | None,
    ) -> Submitted:
        """Given `leasing`, the batch (status running, started) holds that lease as it is written,
        and no other process is told of it (nobody else may take it)."""

    async def earlier_submission(
        self, account: str, request: RequestId | None, idempotency: IdempotencyClaim | None
    ) -> str | None:
        """The batch this same request made before (the same signed request, or the same
        Idempotency-Key with the same fingerprint), if any: what `submit` would answer again."""
        if request is not None and (seen := await self._seen_request(request)) and seen[0]:
            return str(seen[0])
        if idempotency is not None:
            found = await self._idempotent_batch(account, idempotency.key)
            if found is not None and found[0] == idempotency.fingerprint:
                return found[1]
        return None

    async def replayed(self, request: RequestId) -> bool:
        """Whether this signed request was noted before. A change notes it as it is made, which
        refuses a replay; this read lets a replay be refused as one before a limit would refuse it
        for another reason."""
        return await self._seen_request(request) is not None

    @abstractmethod
    async def _seen_request(self, request: RequestId) -> Sequence[Any] | None:
        """The note of a signed request, `(batch id or None,)`, or None when it was never noted."""

    @abstractmethod
    async def _idempotent_batch(self, account: str, key: str) -> tuple[str, str] | None:
        """(fingerprint, batch id) of an account's Idempotency-Key."""

    async def get_batch(self, account: str, batch_id: str) -> Batch | None:
        """The account's batch, or None when it does not exist, is another's, or has expired."""
        return await self._get_batch(account, batch_id, self.clock())

    @abstractmethod
    async def _get_batch(self, account: str, batch_id: str, now: float) -> Batch | None: ...

    async def list_batches(
        self, account: str, *, status: BatchStatus | None, limit: int, before: tuple[float, str] | None
    ) -> list[Batch]:
        """The account's batches that have not expired, newest first: at most `limit`, those created
        before `before` (the (created_at, id) of the last one a previous page ended with)."""
        return await self._list_batches(account, status, limit, before, self.clock())

    @abstractmethod
    async def _list_batches(
        self,
        account: str,
        status: BatchStatus | None,
        limit: int,
        before: tuple[float, str] | None,
        now: float,
    ) -> list[Batch]: ...

    @abstractmethod
    async def job_results(self, batch_id: str) -> list[JobResult]:
        """Every job of a batch in order: its params as run, and its response and outcome (None
        while it has not run)."""

    async def delivery_state(self, batch_id: str) -> DeliveryState | None:
        """The newest callback delivery of a batch, or None when it has had none."""
        return (await self.delivery_states([batch_id])).get(batch_id)

    @abstractmethod
    async def delivery_states(self, batch_ids: Sequence[str]) -> dict[str, DeliveryState]:
        """The newest callback delivery of each of these batches that has had one, in one read (a
        page of `batch.list` or of the console)."""

    async def usage(self, account: str) -> Usage:
        """What the account holds now."""
        return await self._usage(account, self.clock())

    @abstractmethod
    async def _usage(self, account: str, now: float) -> Usage: ...

    async def restart(
        self, batch: Batch, *, failed_only: bool = False, request: RequestId | None = None
    ) -> Change:
        """Queues the batch's jobs to run again (with `failed_only`, only those that failed or were
        cancelled, keeping the others' results) as a new run. A worker running it loses its lease,
        and a callback still waiting to be sent for the run before is superseded by the new run's."""
        return await self._restart(batch.id, failed_only, request)

    @abstractmethod
    async def _restart(self, batch_id: str, failed_only: bool, request: RequestId | None) -> Change: ...

    async def repost(self, batch: Batch, *, request: RequestId | None = None) -> Change:
        """Queues a new delivery (a new webhook-id) of a finished batch's results, which it reads when
        it is sent: nothing is copied. NOTHING when the batch has no callback URL."""
        if not batch.callback_url:
            return Change.NOTHING
        return await self._insert_delivery(new_id(), batch.id, self.clock(), request)

    @abstractmethod
    async def _insert_delivery(
        self, delivery_id: str, batch_id: str, now: float, request: RequestId | None
    ) -> Change: ...

    async def recent_reposts(self, batch_id: str, *, since: float) -> list[float]:
        """When the batch's deliveries were queued since `since`, oldest first."""
        return await self._recent_deliveries(batch_id, since)

    @abstractmethod
    async def _recent_deliveries(self, batch_id: str, since: float) -> list[float]: ...

    async def cancel(self, batch: Batch, *, cancelled: bytes, request: RequestId | None = None) -> Change:
        """Cancels a batch. One that no worker holds finishes at once: each job not yet run is
        answered `cancelled` (a wire error body) and the callback is queued. One a worker holds is
        marked, and its worker stops it (REQUESTED). FINISHED: it had already finished."""
        now = self.clock()
        delivery_id = new_id() if batch.callback_url else None
        return await self._cancel(
            batch.id, cancelled.decode(), now, now + self.result_ttl_s, delivery_id, request
        )

    @abstractmethod
    async def _cancel(
        self,
        batch_id: str,
        cancelled: str,
        now: float,
        expires_at: float,
        delivery_id: str | None,
        request: RequestId | None,
    ) -> Change: ...

    # batches, as the worker sees them --------------------------------------
    async def claim_batches(
        self, owner: str, *, limit: int, lease_s: float, skip_namespaces: Sequence[str] = ()
    ) -> list[Lease]:
        """Leases up to `limit` runnable batches, oldest first: queued ones, and running ones whose
        lease expired; passing over those whose next job is in one of `skip_namespaces` (forwarded
        to an upstream that is full in this process). Each lease holds the jobs not yet finished."""
        return await self._claim_batches(owner, limit, self.clock(), lease_s, list(skip_namespaces))

    @abstractmethod
    async def _claim_batches(
        self, owner: str, limit: int, now: float, lease_s: float, skip_namespaces: list[str]
    ) -> list[Lease]: ...

    async def record(
        self,
        lease: Lease,
        finished: Sequence[Finished],
        *,
        done: int,
        lease_s: float,
        cancelled: bool = False,
        delivery_to: Offer[Delivery] | None = None,
    ) -> Recorded:
        """Records finished jobs under the lease; `done` is how many of the batch's jobs have then
        finished, these included; `cancelled` says a job of the batch was cancelled (stopped, at the
        client's request).

        The record that finishes the batch's last job finishes the batch, complete, or cancelled if
        a job was: its results expire `result_ttl_s` later, and its callback is queued in the same
        transaction (given `delivery_to`, a delivery loop of this process with room now, already
        leased to it, and handed to it once committed). Any other record renews the lease, and says
        whether the client has asked to cancel the batch. Nothing is written when the lease was
        lost (the batch was restarted, or its lease expired and another worker took it)."""
        now = self.clock()
        if done < lease.job_count:
            return await self._advance(lease, finished, until=now + lease_s)
        status = BatchStatus.CANCELLED if cancelled else BatchStatus.COMPLETE
        completed = await self._finish(lease, finished, None, status, now, delivery_to)
        return Recorded.COMPLETED if completed else Recorded.LOST

    async def finish_cancelled(
        self,
        lease: Lease,
        finished: Sequence[Finished],
        *,
        cancelled: bytes,
        delivery_to: Offer[Delivery] | None = None,
    ) -> bool:
        """Records the jobs that finished, answers every other one `cancelled`, and finishes the
        batch as cancelled, queuing its callback (to `delivery_to`, as `record` does); False when
        the lease was lost."""
        now = self.clock()
        return await self._finish(
            lease, finished, cancelled.decode(), BatchStatus.CANCELLED, now, delivery_to
        )

    async def _finish(
        self,
        lease: Lease,
        finished: Sequence[Finished],
        cancelled: str | None,
        status: BatchStatus,
        now: float,
        delivery_to: Offer[Delivery] | None,
    ) -> bool:
        delivery_id = new_id() if lease.callback_url else None
        leasing = None
        if delivery_id is not None and delivery_to is not None:
            leasing = Leasing(delivery_to.owner, new_token(), now + delivery_to.lease_s)
        completed, row = await self._complete(
            lease,
            finished,
            cancelled=cancelled,
            status=status,
            now=now,
            expires_at=now + self.result_ttl_s,
            delivery_id=delivery_id,
            delivery_leasing=leasing,
        )
        if completed and row is not None and leasing is not None and delivery_to is not None:
            delivery_to.take(self._unsealed(delivery_from_row(row, leasing.token)))
        return completed

    @abstractmethod
    async def _advance(self, lease: Lease, finished: Sequence[Finished], *, until: float) -> Recorded:
        """Writes the finished jobs and moves the lease to `until`, fenced by the lease token:
        LOST, ADVANCED or CANCEL_REQUESTED."""

    @abstractmethod
    async def _complete(
        self,
        lease: Lease,
        finished: Sequence[Finished],
        *,
        cancelled: str | None,
        status: BatchStatus,
        now: float,
        expires_at: float,
        delivery_id: str | None,
        delivery_leasing: Leasing | None = None,
    ) -> tuple[bool, Sequence[Any] | None]:
        """Writes the finished jobs (and, given `cancelled`, that body for every job still without a
        response), finishes the batch with `status` at `now`, its results readable until
        `expires_at`, drops the lease and, given `delivery_id`, queues the callback; one
        transaction, fenced by the lease token. False when the lease was lost.

        Given `delivery_leasing`, the callback is queued leased (its `next_at` the lease's end, as a
        claim leaves it), no other process is told of it, and the second value is its row as
        `delivery_from_row` reads it; otherwise None."""

    async def renew(self, tokens: Sequence[str], *, lease_s: float) -> list[str]:
        """Extends the leases that are still held; returns the batches among them whose client has
        asked to cancel them."""
        if not tokens:
            return []
        return await self._renew(tokens, self.clock() + lease_s)

    @abstractmethod
    async def _renew(self, tokens: Sequence[str], until: float) -> list[str]: ...

    async def release(self, tokens: Sequence[str]) -> None:
        """Gives leases up at once (on shutdown), so their batches are claimed again without waiting."""
        if tokens:
            await self._renew(tokens, 0.0)

    # the callback outbox ---------------------------------------------------
    async def claim_deliveries(
        self, *, limit: int, lease_s: float, skip: Sequence[str] = (), per_destination: int = 1_000_000
    ) -> list[Delivery]:
        """Leases up to `limit` pending deliveries that are due, oldest first, passing over those to
        the destinations (host:port) in `skip`, and taking at most `per_destination` to any one."""
        now = self.clock()
        return [
            self._unsealed(delivery)
            for delivery in await self._claim_deliveries(limit, now, lease_s, list(skip), per_destination)
        ]

    def _unsealed(self, delivery: Delivery) -> Delivery:
        return replace(delivery, secrets=tuple(self.vault.unseal(secret) for secret in delivery.secrets))

    @abstractmethod
    async def _claim_deliveries(
        self, limit: int, now: float, lease_s: float, skip: list[str], per_destination: int
    ) -> list[Delivery]:
        """The deliveries, each with the secrets that sign it now (sealed, as stored)."""

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

    async def postpone(self, delivery: Delivery, *, until: float) -> None:
        """Hands a leased delivery back, due at `until`, without counting an attempt (its destination
        is backed off)."""
        await self._postpone(delivery, until)

    @abstractmethod
    async def _postpone(self, delivery: Delivery, until: float) -> None: ...

    @abstractmethod
    async def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery is due, or None when there is none."""

    @abstractmethod
    async def attempts(self, batch_id: str) -> list[Attempt]:
        """Every delivery attempt for a batch, oldest first."""

    # the operator's view (every account) -------------------------------------
    async def find_batches(
        self,
        *,
        account: str | None = None,
        status: BatchStatus | None = None,
        since: float | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Batch]:
        """Batches of any account, newest first, filtered; `before` pages as in `list_batches`."""
        return await self._find_batches(account, status and status.value, since, limit, before)

    @abstractmethod
    async def _find_batches(
        self,
        account: str | None,
        status: str | None,
        since: float | None,
        limit: int,
        before: tuple[float, str] | None,
    ) -> list[Batch]: ...

    @abstractmethod
    async def find_batch(self, batch_id: str) -> Batch | None:
        """A batch of any account, expired or not, until it is purged."""

    @abstractmethod
    async def job_views(self, batch_id: str) -> list[JobView]:
        """Every job of a batch, in order, as the operator sees it."""

    @abstractmethod
    async def deliveries(self, batch_id: str) -> list[DeliveryView]:
        """Every callback delivery of a batch, oldest first."""

    async def failed_deliveries(
        self, *, limit: int = 50, before: tuple[float, str] | None = None
    ) -> list[DeliveryView]:
        """Deliveries that ran out of tries, or whose receiver answered 410: newest first."""
        return await self._failed_deliveries(limit, before)

    @abstractmethod
    async def _failed_deliveries(
        self, limit: int, before: tuple[float, str] | None
    ) -> list[DeliveryView]: ...

    async def redeliver(self, delivery_id: str) -> bool:
        """Sends a failed delivery again, with the same webhook-id, as soon as a deliverer takes it;
        False when there is no such failed delivery."""
        return await self._redeliver(delivery_id, self.clock())

    @abstractmethod
    async def _redeliver(self, delivery_id: str, now: float) -> bool: ...

    async def touch_key(self, key: str) -> None:
        """Notes that a key was just used (the console shows when each key was used last)."""
        await self._touch_key(key, self.clock())

    @abstractmethod
    async def _touch_key(self, key: str, now: float) -> None: ...

    async def note_worker(
        self, worker_id: str, *, role: str, host: str, pid: int, holding: Sequence[str]
    ) -> None:
        """A worker says it is alive, and which batches it holds (with its heartbeat)."""
        await self._note_worker(worker_id, role, host, pid, json.dumps(list(holding)), self.clock())

    @abstractmethod
    async def _note_worker(
        self, worker_id: str, role: str, host: str, pid: int, holding: str, now: float
    ) -> None: ...

    async def forget_worker(self, worker_id: str) -> None:
        """A worker that stops says so."""
        await self._forget_worker(worker_id)

    @abstractmethod
    async def _forget_worker(self, worker_id: str) -> None: ...

    async def workers(self, *, alive_within_s: float) -> list[WorkerView]:
        """The workers heard from within `alive_within_s`; the others are forgotten."""
        return await self._workers(self.clock() - alive_within_s)

    @abstractmethod
    async def _workers(self, since: float) -> list[WorkerView]: ...

    async def audit(self, actor: str, action: str, target: str, detail: str = "") -> None:
        await self._audit(AuditEntry(self.clock(), actor, action, target, detail))

    @abstractmethod
    async def _audit(self, entry: AuditEntry) -> None: ...

    @abstractmethod
    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        """The newest entries of the audit log first."""

    async def overview(self, *, minutes: int = 30) -> Overview:
        return await self._overview(self.clock(), minutes)

    @abstractmethod
    async def _overview(self, now: float, minutes: int) -> Overview: ...

    # housekeeping ----------------------------------------------------------
    async def purge(self) -> int:
        """Deletes batches whose results have expired, and the replay and idempotency records whose
        time has passed; returns how many batches."""
        return await self._purge(self.clock())

    @abstractmethod
    async def _purge(self, now: float) -> int: ...
