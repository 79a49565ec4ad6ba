"""The PostgreSQL store: many API and worker processes share one database.

Each hook is one SQL statement where it can be (one round trip, one commit): claims lease rows
with `FOR UPDATE SKIP LOCKED`, so concurrent workers pass over each other's batches instead of
waiting for them; every write a worker makes is fenced by its lease token; and every write that
queues work is followed, once committed, by a notification (`Notifier`), which `listen()` turns
into wake-ups of the workers and delivery loops of every process. Polling stays the fallback. See
docs/postgres.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from batchgate import metrics
from batchgate.models import (
    ApiKey,
    Attempt,
    AuditEntry,
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    DeliveryView,
    Finished,
    JobOutcome,
    JobResult,
    JobSpec,
    JobView,
    Lease,
    Overview,
    Recorded,
    WorkerView,
)
from batchgate.store import sql
from batchgate.store.base import (
    Change,
    DeliveryState,
    IdempotencyClaim,
    Leasing,
    RequestId,
    Store,
    StoreUnavailable,
    SubmitOutcome,
    Submitted,
    Usage,
    batch_from_row,
    delivery_from_row,
    delivery_state_from_row,
    delivery_view_from_row,
    job_result_from_row,
    job_view_from_row,
    lease_from_rows,
    worker_view_from_row,
)
from batchgate.vault import Vault


class MissingDriver(ImportError):
    """PostgreSQL needs asyncpg: pip install 'batchgate[postgres]'."""


try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - the test environment has asyncpg
    raise MissingDriver(MissingDriver.__doc__) from exc

P = ParamSpec("P")
T = TypeVar("T")
Q = sql.queries("postgres")
log = logging.getLogger(__name__)

BATCHES_CHANNEL = "batchgate_batches"  # the notification channels
DELIVERIES_CHANNEL = "batchgate_deliveries"
CANCELS_CHANNEL = "batchgate_cancels"
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,  # the server refused: constraint, shutdown, deadlock...
    asyncpg.InterfaceError,  # the connection or the pool is closed
    OSError,  # the server cannot be reached
    TimeoutError,  # a statement outlived command_timeout_s
)
CLOCK_SYNC_S = 300.0  # how often a worker reads the database's clock again
AUTOVACUUM_OFF = (
    "PostgreSQL's autovacuum is off: batchgate's queue tables keep every dead row version, and "
    "claiming work slows down under sustained load until someone runs VACUUM; turn autovacuum on"
)


def wrap_exceptions(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Translates driver errors into StoreUnavailable, so nothing above the store sees asyncpg, and
    times each operation (a write is one statement and its commit)."""
    seconds = metrics.STORE_SECONDS.labels(fn.__name__.lstrip("_"))

    @functools.wraps(fn)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        finally:
            seconds.observe(time.perf_counter() - started)

    return wrapped


class PostgresStore(Store):
    def __init__(
        self,
        url: str,
        *,
        result_ttl_s: float,
        clock: Callable[[], float] | None = None,
        vault: Vault | None = None,
        pool_size: int = 10,
        command_timeout_s: float = 30.0,
        listen_check_s: float = 15.0,
    ) -> None:
        super().__init__(result_ttl_s=result_ttl_s, clock=clock or self._database_time, vault=vault)
        # Until the first reading of the database's clock: this host's own.
        self._offset = time.time() - time.monotonic()
        self._synced_at = -CLOCK_SYNC_S
        self.url = url
        self.pool_size = pool_size
        self.command_timeout_s = command_timeout_s
        self.listen_check_s = listen_check_s
        self._pool: Any = None  # asyncpg.Pool, once open
        self._listener: Listener | None = None
        self._notifier = Notifier(lambda: self._pool)
        self._autovacuum = True  # the server's setting, read at open

    # lifecycle -------------------------------------------------------------
    @wrap_exceptions
    async def open(self) -> list[int]:
        pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            command_timeout=self.command_timeout_s,
            server_settings={"application_name": "batchgate"},
            reset=_keep_session,  # asyncpg >= 0.30
        )
        try:
            async with pool.acquire() as conn:
                applied = await self._migrate(conn)
                await self._sync_clock(conn)
                self._autovacuum = bool(await conn.fetchval(Q["autovacuum_on"]))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        return applied

    def advice(self) -> list[str]:
        return [] if self._autovacuum else [AUTOVACUUM_OFF]

    def _database_time(self) -> float:
        """The database server's clock, read through this host's monotonic clock.

        Leases are written by one host and compared by another: on one shared clock, a host whose
        own clock is off, or is stepped, neither takes a live lease early nor keeps a dead one."""
        return time.monotonic() + self._offset

    async def _sync_clock(self, conn: Any) -> None:
        before = time.monotonic()
        database_now = await conn.fetchval(Q["database_time"])
        after = time.monotonic()
        self._offset = database_now - (before + after) / 2
        self._synced_at = after

    async def _keep_clock_synced(self) -> None:
        """Reads the database's clock again every CLOCK_SYNC_S, on the worker's claim path."""
        if time.monotonic() - self._synced_at > CLOCK_SYNC_S:
            async with self._pool.acquire() as conn:
                await self._sync_clock(conn)

    @staticmethod
    async def _migrate(conn: Any) -> list[int]:
        """Applies pending migrations in one transaction, one process at a time; returns their versions."""
        async with conn.transaction():
            await conn.execute(Q["lock_migrations"])
            await conn.execute(Q["create_migrations_table"])
            applied = {row[0] for row in await conn.fetch(Q["applied_migrations"])}
            pending = [(v, script) for v, script in sql.migrations("postgres") if v not in applied]
            for version, script in pending:
                await conn.execute(script)
                await conn.execute(Q["record_migration"], version)
        return [version for version, _ in pending]

    async def close(self) -> None:
        await self._notifier.flush()  # the last writes' wake-ups: other processes run that work
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self.command_timeout_s)
            except TimeoutError:
                log.warning("PostgreSQL pool did not close in time; terminating its connections")
                self._pool.terminate()
            self._pool = None

    @wrap_exceptions
    async def listen(
        self,
        *,
        on_batches: Callable[[], None],
        on_deliveries: Callable[[], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        if self._listener is not None:
            await self._listener.close()
        self._listener = Listener(
            self.url,
            {
                BATCHES_CHANNEL: lambda _payload: on_batches(),
                DELIVERIES_CHANNEL: lambda _payload: on_deliveries(),
                CANCELS_CHANNEL: on_cancel,
            },
            on_reconnect=(on_batches, on_deliveries),
            check_s=self.listen_check_s,
        )
        await self._listener.start()

    @wrap_exceptions
    async def probe(self) -> None:
        if self._pool is None:
            raise StoreUnavailable("PostgreSQL: not connected")
        await self._pool.execute(Q["probe"])

    # keys ------------------------------------------------------------------
    @wrap_exceptions
    async def _insert_key(self, api_key: ApiKey) -> None:
        await self._pool.execute(
            Q["insert_key"],
            api_key.key,
            api_key.secret,
            api_key.account,
            api_key.created_at,
            api_key.webhook_secret,
        )

    @wrap_exceptions
    async def _get_key(self, key: str) -> ApiKey | None:
        row = await self._pool.fetchrow(Q["get_key"], key)
        return ApiKey(*row) if row else None

    @wrap_exceptions
    async def _list_keys(self) -> list[ApiKey]:
        return [ApiKey(*row) for row in await self._pool.fetch(Q["list_keys"])]

    @wrap_exceptions
    async def _revoke_key(self, key: str, now: float) -> bool:
        return await self._pool.fetchval(Q["revoke_key"], key, now) is not None

    @wrap_exceptions
    async def _update_webhook_secrets(self, api_key: ApiKey) -> None:
        await self._pool.execute(
            Q["update_webhook_secrets"],
            api_key.key,
            api_key.webhook_secret,
            api_key.webhook_secret_previous,
            api_key.webhook_previous_until,
        )

    @wrap_exceptions
    async def _update_secrets(self, api_key: ApiKey) -> None:
        await self._pool.execute(
            Q["update_secrets"],
            api_key.key,
            api_key.secret,
            api_key.webhook_secret,
            api_key.webhook_secret_previous,
        )

    # replays ---------------------------------------------------------------
    @wrap_exceptions
    async def _first_use(self, request: RequestId) -> bool:
        noted = await self._pool.fetchval(Q["note_request"], *_request(request), None)
        return noted is not None

    # batches ---------------------------------------------------------------
    @wrap_exceptions
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
        args = (
            batch.id,
            batch.account,
            batch.key,
            batch.callback_url,
            batch.job_count,
            batch.status.value,
            batch.run,
            batch.created_at,
            batch.concurrency,
            destination,
            [job.namespace for job in jobs],
            [job.action for job in jobs],
            [job.params for job in jobs],
            [job.key for job in jobs],
            [json.dumps(list(job.depends_on)) if job.depends_on else None for job in jobs],
            *(_request(request) if request else (None, None, None)),
            batch.started_at,
            *((leasing.owner, leasing.token, leasing.until) if leasing else (None, None, None)),
            traceparent,
        )
        if idempotency is not None:
            submitted = await self._insert_batch_once(batch, args, request, idempotency)
        elif await self._pool.fetchval(Q["insert_batch"], *args) is not None:
            submitted = Submitted(SubmitOutcome.CREATED, batch.id)
        else:
            submitted = Submitted(SubmitOutcome.REPEATED, await self._seen_batch_in(self._pool, request))
        # leased as it was saved, the batch is this process's worker's: no other need hear of it
        if submitted.outcome is SubmitOutcome.CREATED and leasing is None:
            self._notifier.notify(BATCHES_CHANNEL)
        return submitted

    async def _insert_batch_once(
        self, batch: Batch, args: tuple[Any, ...], request: RequestId | None, idempotency: IdempotencyClaim
    ) -> Submitted:
        """The batch, unless its idempotency key (or its signed request) made one already."""
        async with self._pool.acquire() as conn, conn.transaction():
            if request is not None and (seen := await self._seen_batch_in(conn, request)):
                return Submitted(SubmitOutcome.REPEATED, seen)
            claimed = await conn.fetchval(
                Q["claim_idempotency_key"],
                batch.account,
                idempotency.key,
                idempotency.fingerprint,
                batch.id,
                idempotency.expires_at,
            )
            if claimed is None:
                fingerprint, batch_id = await conn.fetchrow(
                    Q["idempotency_key"], batch.account, idempotency.key
                )
                if fingerprint != idempotency.fingerprint:
                    return Submitted(SubmitOutcome.CONFLICT, None)
                if request is not None:
                    await conn.fetchval(Q["note_request"], *_request(request), batch_id)
                return Submitted(SubmitOutcome.REPEATED, batch_id)
            await conn.fetchval(Q["insert_batch"], *args)
            return Submitted(SubmitOutcome.CREATED, batch.id)

    @staticmethod
    async def _seen_batch_in(conn: Any, request: RequestId | None) -> str | None:
        if request is None:
            return None
        batch_id: str | None = await conn.fetchval(Q["seen_request"], request.key, request.signature)
        return batch_id

    @wrap_exceptions
    async def _seen_request(self, request: RequestId) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._pool.fetchrow(
            Q["seen_request"], request.key, request.signature
        )
        return row

    @wrap_exceptions
    async def _idempotent_batch(self, account: str, key: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(Q["idempotency_key"], account, key)
        return (row[0], row[1]) if row else None

    @wrap_exceptions
    async def _get_batch(self, account: str, batch_id: str, now: float) -> Batch | None:
        row = await self._pool.fetchrow(Q["get_batch"], batch_id, account, now)
        return batch_from_row(row) if row else None

    @wrap_exceptions
    async def _list_batches(
        self,
        account: str,
        status: BatchStatus | None,
        limit: int,
        before: tuple[float, str] | None,
        now: float,
    ) -> list[Batch]:
        rows = await self._pool.fetch(
            Q["list_batches"],
            account,
            now,
            status and status.value,
            limit,
            *(before or (None, None)),
        )
        return [batch_from_row(row) for row in rows]

    @wrap_exceptions
    async def job_results(self, batch_id: str) -> list[JobResult]:
        return [job_result_from_row(row) for row in await self._pool.fetch(Q["job_results"], batch_id)]

    @wrap_exceptions
    async def delivery_states(self, batch_ids: Sequence[str]) -> dict[str, DeliveryState]:
        rows = await self._pool.fetch(Q["newest_deliveries"], list(batch_ids))
        return {row[0]: delivery_state_from_row(tuple(row)[1:]) for row in rows}

    @wrap_exceptions
    async def _usage(self, account: str, now: float) -> Usage:
        open_batches, result_bytes = await self._pool.fetchrow(Q["usage"], account, now)
        return Usage(open_batches, result_bytes)

    @wrap_exceptions
    async def _restart(self, batch_id: str, failed_only: bool, request: RequestId | None) -> Change:
        noted, restarted = await self._pool.fetchrow(
            Q["restart_batch"], batch_id, *(_request(request) if request else (None, None, None)), failed_only
        )
        if not noted:
            return Change.REPLAYED
        if not restarted:
            return Change.NOTHING
        self._notifier.notify(BATCHES_CHANNEL)
        return Change.DONE

    @wrap_exceptions
    async def _insert_delivery(
        self, delivery_id: str, batch_id: str, now: float, request: RequestId | None
    ) -> Change:
        noted, queued = await self._pool.fetchrow(
            Q["insert_delivery"],
            delivery_id,
            batch_id,
            now,
            *(_request(request) if request else (None, None, None)),
        )
        if queued:
            self._notifier.notify(DELIVERIES_CHANNEL)
        return Change.DONE if noted else Change.REPLAYED

    @wrap_exceptions
    async def _recent_deliveries(self, batch_id: str, since: float) -> list[float]:
        return [row[0] for row in await self._pool.fetch(Q["recent_deliveries"], batch_id, since)]

    @wrap_exceptions
    async def _cancel(
        self,
        batch_id: str,
        cancelled: str,
        now: float,
        expires_at: float,
        delivery_id: str | None,
        request: RequestId | None,
    ) -> Change:
        async with self._pool.acquire() as conn, conn.transaction():
            if (
                request is not None
                and await conn.fetchval(Q["note_request"], *_request(request), batch_id) is None
            ):
                return Change.REPLAYED
            unheld = await conn.fetchrow(
                Q["cancel_unheld"], batch_id, cancelled, now, expires_at, delivery_id
            )
            requested = unheld is None and await conn.fetchval(Q["request_cancel"], batch_id, now) is not None
        # told once the transaction has committed, so that whoever hears finds the change
        if unheld is not None:
            if unheld[1]:  # its callback was queued
                self._notifier.notify(DELIVERIES_CHANNEL)
            return Change.DONE
        if requested:
            self._notifier.notify(CANCELS_CHANNEL, batch_id)
            return Change.REQUESTED
        return Change.FINISHED

    # the worker's side -----------------------------------------------------
    @wrap_exceptions
    async def _claim_batches(
        self, owner: str, limit: int, now: float, lease_s: float, skip_namespaces: list[str]
    ) -> list[Lease]:
        await self._keep_clock_synced()
        rows = await self._pool.fetch(Q["claim_batches"], owner, now, limit, now + lease_s, skip_namespaces)
        return [lease_from_rows(row[:9], list(zip(*row[9:], strict=True))) for row in rows]

    @wrap_exceptions
    async def _advance(self, lease: Lease, finished: Sequence[Finished], *, until: float) -> Recorded:
        row = await self._pool.fetchrow(
            Q["record_jobs"], lease.batch_id, lease.token, *_tally(finished), until, *_columns(finished)
        )
        if row is None:
            return Recorded.LOST
        return Recorded.CANCEL_REQUESTED if row[0] else Recorded.ADVANCED

    @wrap_exceptions
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
        row = await self._pool.fetchrow(
            Q["finish_batch"],
            lease.batch_id,
            lease.token,
            *_tally(finished),
            now,
            *_columns(finished),
            status.value,
            cancelled,
            delivery_id,
            expires_at,
            *((delivery_leasing.token, delivery_leasing.until) if delivery_leasing else (None, None)),
        )
        if row is None:
            return False, None
        if delivery_id is not None and delivery_leasing is None:
            self._notifier.notify(DELIVERIES_CHANNEL)
        return True, (tuple(row[1:]) if delivery_leasing is not None and row[1] is not None else None)

    @wrap_exceptions
    async def _renew(self, tokens: Sequence[str], until: float) -> list[str]:
        rows = await self._pool.fetch(Q["renew_leases"], list(tokens), until)
        return [row[0] for row in rows if row[0] is not None]

    # the callback outbox ---------------------------------------------------
    @wrap_exceptions
    async def _claim_deliveries(
        self, limit: int, now: float, lease_s: float, skip: list[str], per_destination: int
    ) -> list[Delivery]:
        rows = await self._pool.fetch(Q["claim_deliveries"], now, limit, now + lease_s, skip, per_destination)
        return [delivery_from_row(row[:10], row[10]) for row in rows]

    @wrap_exceptions
    async def _finish_attempt(
        self, delivery: Delivery, attempt: Attempt, status: DeliveryStatus, next_at: float | None
    ) -> None:
        await self._pool.execute(
            Q["finish_attempt"],
            delivery.id,
            delivery.token,
            status.value,
            next_at,
            attempt.number,
            attempt.at,
            attempt.status_code,
            attempt.error,
            attempt.duration_ms,
        )

    @wrap_exceptions
    async def _postpone(self, delivery: Delivery, until: float) -> None:
        await self._pool.execute(Q["postpone_delivery"], delivery.id, delivery.token, until)

    @wrap_exceptions
    async def next_delivery_at(self) -> float | None:
        due = await self._pool.fetchval(Q["next_delivery_at"])
        return None if due is None else float(due)

    @wrap_exceptions
    async def attempts(self, batch_id: str) -> list[Attempt]:
        return [Attempt(*row) for row in await self._pool.fetch(Q["attempts_of_batch"], batch_id)]

    # the operator's view ---------------------------------------------------
    @wrap_exceptions
    async def _find_batches(
        self,
        account: str | None,
        status: str | None,
        since: float | None,
        limit: int,
        before: tuple[float, str] | None,
    ) -> list[Batch]:
        rows = await self._pool.fetch(
            Q["find_batches"], account, status, since, limit, *(before or (None, None))
        )
        return [batch_from_row(row) for row in rows]

    @wrap_exceptions
    async def find_batch(self, batch_id: str) -> Batch | None:
        row = await self._pool.fetchrow(Q["find_batch"], batch_id)
        return batch_from_row(row) if row else None

    @wrap_exceptions
    async def job_views(self, batch_id: str) -> list[JobView]:
        return [job_view_from_row(row) for row in await self._pool.fetch(Q["job_views"], batch_id)]

    @wrap_exceptions
    async def deliveries(self, batch_id: str) -> list[DeliveryView]:
        return [
            delivery_view_from_row(row) for row in await self._pool.fetch(Q["deliveries_of_batch"], batch_id)
        ]

    @wrap_exceptions
    async def _failed_deliveries(self, limit: int, before: tuple[float, str] | None) -> list[DeliveryView]:
        rows = await self._pool.fetch(Q["failed_deliveries"], limit, *(before or (None, None)))
        return [delivery_view_from_row(row) for row in rows]

    @wrap_exceptions
    async def _redeliver(self, delivery_id: str, now: float) -> bool:
        if await self._pool.fetchval(Q["redeliver"], delivery_id, now) is None:
            return False
        self._notifier.notify(DELIVERIES_CHANNEL)
        return True

    @wrap_exceptions
    async def _touch_key(self, key: str, now: float) -> None:
        await self._pool.execute(Q["touch_key"], key, now)

    @wrap_exceptions
    async def _note_worker(
        self, worker_id: str, role: str, host: str, pid: int, holding: str, now: float
    ) -> None:
        await self._pool.execute(Q["note_worker"], worker_id, role, host, pid, holding, now)

    @wrap_exceptions
    async def _forget_worker(self, worker_id: str) -> None:
        await self._pool.execute(Q["forget_worker"], worker_id)

    @wrap_exceptions
    async def _workers(self, since: float) -> list[WorkerView]:
        return [worker_view_from_row(row) for row in await self._pool.fetch(Q["workers"], since)]

    @wrap_exceptions
    async def _audit(self, entry: AuditEntry) -> None:
        await self._pool.execute(Q["audit"], entry.at, entry.actor, entry.action, entry.target, entry.detail)

    @wrap_exceptions
    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        return [AuditEntry(*row) for row in await self._pool.fetch(Q["audit_log"], limit)]

    @wrap_exceptions
    async def _overview(self, now: float, minutes: int) -> Overview:
        since = now - 60 * minutes
        counts = await self._pool.fetchrow(Q["overview"])
        per_minute = await self._pool.fetch(Q["jobs_per_minute"], since, since + self.result_ttl_s)
        queued, running, oldest, pending, failed = counts
        per_minute_jobs = tuple((float(minute), int(jobs)) for minute, jobs in per_minute)
        return Overview(queued, running, oldest, pending, failed, per_minute_jobs)

    @wrap_exceptions
    async def _purge(self, now: float) -> int:
        return int(await self._pool.fetchval(Q["purge"], now))


class Notifier:
    """Sends the notifications that a process's writes call for, once those writes have
    committed, many in one transaction.

    PostgreSQL makes the commits of all transactions that notify wait for each other, on one
    lock held through each commit's flush to disk. With `pg_notify` inside the writes, every
    `run` and every finished batch waited its turn behind every other, and their commits could
    not share a flush (in a soak, up to 19 writes at a time waited on that lock). The writes
    here notify no one; each asks this notifier, which sends everything asked since its last
    send in one statement of its own, committed without waiting for the disk (`notify` in
    queries.sql). One send at a time: what is asked meanwhile goes in the next. A notification
    lost to a crash just after its write committed is covered by polling, as one lost to a
    dropped LISTEN connection is."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool  # the store's pool (asyncpg.Pool), or None once it is closed
        self._asked: dict[tuple[str, str], None] = {}  # (channel, payload), in the order asked
        self._sending: asyncio.Task[None] | None = None

    def notify(self, channel: str, payload: str = "") -> None:
        self._asked[channel, payload] = None
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def flush(self) -> None:
        """Waits until everything asked so far has been sent (or failed to be)."""
        while self._sending is not None and not self._sending.done():
            await asyncio.shield(self._sending)

    async def _send(self) -> None:
        while self._asked:
            asked, self._asked = list(self._asked), {}
            pool = self._pool()
            if pool is None:
                return  # closed: the other processes' polling finds the work
            try:
                await pool.execute(
                    Q["notify"], [channel for channel, _ in asked], [payload for _, payload in asked]
                )
            except DRIVER_ERRORS as exc:
                log.warning(
                    "could not notify the other processes (%s: %s); they find the work when they poll",
                    type(exc).__name__,
                    exc,
                )


class Listener:
    """One connection LISTENing on the notification channels, kept up by a background task.

    Each callback gets the notification's payload. Notifications sent while the connection is
    down are lost, so every reconnection calls `on_reconnect`: the loops then look for work as if
    they had been notified (a lost cancel is still found by the worker's next heartbeat).
    """

    def __init__(
        self,
        url: str,
        callbacks: dict[str, Callable[[str], None]],
        *,
        on_reconnect: Sequence[Callable[[], None]],
        check_s: float,
    ) -> None:
        self.url = url
        self.callbacks = callbacks
        self.on_reconnect = on_reconnect
        self.check_s = check_s
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._keep_listening())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.check_s)
            except DRIVER_ERRORS:
                conn.terminate()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self.url, timeout=self.check_s, server_settings={"application_name": "batchgate-listen"}
        )
        self._conn = conn  # from here on, a failure drops it
        lost = self._lost = asyncio.Event()  # one per connection: a late call from an old one is harmless
        conn.add_termination_listener(lambda _conn: lost.set())
        for channel, callback in self.callbacks.items():
            await conn.add_listener(channel, _notified(callback))

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no goodbye: the connection may be half dead

    async def _keep_listening(self) -> None:
        delay_s = 0.1
        while True:
            try:
                if self._conn is None:
                    await self._connect()
                    log.warning("listening for notifications again")
                    for callback in self.on_reconnect:
                        callback()
                    delay_s = 0.1
                await self._check()
            except Exception as exc:  # whatever broke, polling covers until the connection is back
                log.warning(
                    "notification connection lost (%s: %s); reconnecting in %.1f s",
                    type(exc).__name__,
                    exc,
                    delay_s,
                    exc_info=not isinstance(exc, DRIVER_ERRORS),
                )
                self._drop()
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, self.check_s)

    async def _check(self) -> None:
        """Returns after `check_s` if the connection still answers; raises once it is gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), self.check_s)
        if self._lost.is_set() or self._conn.is_closed():
            raise ConnectionResetError("the server closed the connection")
        await self._conn.fetchval(Q["ping"], timeout=self.check_s)


async def _keep_session(conn: Any) -> None:
    """Replaces asyncpg's reset on release, a round trip per statement (RESET ALL, UNLISTEN *...):
    these connections never change session state. asyncpg still rolls back an open transaction."""


def _notified(callback: Callable[[str], None]) -> Callable[..., None]:
    """asyncpg's listener signature (connection, pid, channel, payload) -> our callback of the payload."""

    def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return on_notification


def _request(request: RequestId) -> tuple[str, str, float]:
    return request.key, request.signature, request.expires_at


def _tally(finished: Sequence[Finished]) -> tuple[int, int, int, int]:
    """What a record adds to the batch's counts: done, failed, cancelled, bytes."""
    return (
        len(finished),
        sum(job.outcome is JobOutcome.FAILED for job in finished),
        sum(job.outcome is JobOutcome.CANCELLED for job in finished),
        sum(len(job.response) for job in finished),
    )


def _columns(finished: Sequence[Finished]) -> tuple[list[Any], ...]:
    """The finished jobs as one array per column, for unnest()."""
    return (
        [job.index for job in finished],
        [job.response.decode() for job in finished],
        [job.outcome.value for job in finished],
        [job.finished_at for job in finished],
        [job.duration_ms for job in finished],
        [job.attempts for job in finished],
        [job.resolved_params for job in finished],
    )
