"""The PostgreSQL store: many API and worker processes share one database.

Each hook is one SQL statement where it can be (one round trip, one commit): claims lease rows
with `FOR UPDATE SKIP LOCKED`, so concurrent workers pass over each other's batches instead of
waiting for them; every write a worker makes is fenced by its lease token; and every write that
queues work calls `pg_notify` in the same statement, which `listen()` turns into wake-ups of this
process's worker and delivery loop. Polling stays the fallback. See docs/postgres.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from batchgate.models import (
    ApiKey,
    Attempt,
    Batch,
    Delivery,
    DeliveryStatus,
    JobResult,
    JobSpec,
    Lease,
)
from batchgate.store import sql
from batchgate.store.base import Store, StoreUnavailable, batch_from_row


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

BATCHES_CHANNEL = "batchgate_batches"  # the channels queries.sql notifies
DELIVERIES_CHANNEL = "batchgate_deliveries"
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,  # the server refused: constraint, shutdown, deadlock...
    asyncpg.InterfaceError,  # the connection or the pool is closed
    OSError,  # the server cannot be reached
    TimeoutError,  # a statement outlived command_timeout_s
)
CLOCK_SYNC_S = 300.0  # how often a worker reads the database's clock again


def wrap_exceptions(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Translates driver errors into StoreUnavailable, so nothing above the store sees asyncpg."""

    @functools.wraps(fn)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    return wrapped


class PostgresStore(Store):
    def __init__(
        self,
        url: str,
        *,
        result_ttl_s: float,
        clock: Callable[[], float] | None = None,
        pool_size: int = 10,
        command_timeout_s: float = 30.0,
        listen_check_s: float = 15.0,
    ) -> None:
        super().__init__(result_ttl_s=result_ttl_s, clock=clock or self._database_time)
        # Until the first reading of the database's clock: this host's own.
        self._offset = time.time() - time.monotonic()
        self._synced_at = -CLOCK_SYNC_S
        self.url = url
        self.pool_size = pool_size
        self.command_timeout_s = command_timeout_s
        self.listen_check_s = listen_check_s
        self._pool: Any = None  # asyncpg.Pool, once open
        self._listener: Listener | None = None

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
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        return applied

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
    async def listen(self, *, on_batches: Callable[[], None], on_deliveries: Callable[[], None]) -> None:
        if self._listener is not None:
            await self._listener.close()
        self._listener = Listener(
            self.url,
            {BATCHES_CHANNEL: on_batches, DELIVERIES_CHANNEL: on_deliveries},
            check_s=self.listen_check_s,
        )
        await self._listener.start()

    # keys ------------------------------------------------------------------
    @wrap_exceptions
    async def _insert_key(self, api_key: ApiKey) -> None:
        await self._pool.execute(
            Q["insert_key"], api_key.key, api_key.secret, api_key.account, api_key.created_at
        )

    @wrap_exceptions
    async def get_key(self, key: str) -> ApiKey | None:
        row = await self._pool.fetchrow(Q["get_key"], key)
        return ApiKey(*row) if row else None

    @wrap_exceptions
    async def list_keys(self) -> list[ApiKey]:
        return [ApiKey(*row) for row in await self._pool.fetch(Q["list_keys"])]

    @wrap_exceptions
    async def _revoke_key(self, key: str, now: float) -> bool:
        return await self._pool.fetchval(Q["revoke_key"], key, now) is not None

    # batches ---------------------------------------------------------------
    @wrap_exceptions
    async def _insert_batch(self, batch: Batch, jobs: Sequence[JobSpec]) -> None:
        await self._pool.execute(
            Q["insert_batch"],
            batch.id,
            batch.account,
            batch.key,
            batch.callback_url,
            batch.job_count,
            batch.status.value,
            batch.run,
            batch.created_at,
            [job.namespace for job in jobs],
            [job.action for job in jobs],
            [job.params for job in jobs],
        )

    @wrap_exceptions
    async def _get_batch(self, account: str, batch_id: str, now: float) -> Batch | None:
        row = await self._pool.fetchrow(Q["get_batch"], batch_id, account, now)
        return batch_from_row(row) if row else None

    @wrap_exceptions
    async def job_results(self, batch_id: str) -> list[JobResult]:
        return [JobResult(*row) for row in await self._pool.fetch(Q["job_results"], batch_id)]

    @wrap_exceptions
    async def _restart(self, batch_id: str) -> None:
        await self._pool.execute(Q["restart_batch"], batch_id)

    @wrap_exceptions
    async def _insert_delivery(self, delivery_id: str, batch_id: str, now: float) -> None:
        await self._pool.execute(Q["insert_delivery"], delivery_id, batch_id, now)

    # the worker's side -----------------------------------------------------
    @wrap_exceptions
    async def _claim_batches(self, owner: str, limit: int, now: float, lease_s: float) -> list[Lease]:
        await self._keep_clock_synced()
        rows = await self._pool.fetch(Q["claim_batches"], owner, now, limit, now + lease_s)
        return [_lease(row) for row in rows]

    @wrap_exceptions
    async def _advance(self, lease: Lease, first: int, responses: list[str], *, until: float) -> bool:
        recorded = await self._pool.fetchval(
            Q["record_jobs"], lease.batch_id, lease.token, first, until, responses
        )
        return recorded is not None

    @wrap_exceptions
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
        completed = await self._pool.fetchval(
            Q["complete_jobs"], lease.batch_id, lease.token, first, now, expires_at, responses, delivery_id
        )
        return completed is not None

    @wrap_exceptions
    async def _renew(self, tokens: Sequence[str], until: float) -> None:
        await self._pool.execute(Q["renew_leases"], list(tokens), until)

    # the callback outbox ---------------------------------------------------
    @wrap_exceptions
    async def _claim_deliveries(self, limit: int, now: float, lease_s: float) -> list[Delivery]:
        rows = await self._pool.fetch(Q["claim_deliveries"], now, limit, now + lease_s)
        return [
            Delivery(
                id=row[0],
                batch_id=row[1],
                url=row[2],
                body=None if row[3] is None else bytes(row[3]),
                attempts=row[4],
                secret=row[5],
                token=row[6],
            )
            for row in rows
        ]

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
    async def next_delivery_at(self) -> float | None:
        due = await self._pool.fetchval(Q["next_delivery_at"])
        return None if due is None else float(due)

    @wrap_exceptions
    async def attempts(self, batch_id: str) -> list[Attempt]:
        return [Attempt(*row) for row in await self._pool.fetch(Q["attempts_of_batch"], batch_id)]

    @wrap_exceptions
    async def _purge(self, now: float) -> int:
        return int(await self._pool.fetchval(Q["purge_batches"], now))


class Listener:
    """One connection LISTENing on the notification channels, kept up by a background task.

    Notifications sent while the connection is down are lost, so every reconnection calls each
    callback once: the loops then look for work as if they had been notified.
    """

    def __init__(self, url: str, callbacks: dict[str, Callable[[], None]], *, check_s: float) -> None:
        self.url = url
        self.callbacks = callbacks
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
                    for callback in self.callbacks.values():
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


def _notified(callback: Callable[[], None]) -> Callable[..., None]:
    """asyncpg's listener signature (connection, pid, channel, payload) -> our plain callback."""

    def on_notification(*_: Any) -> None:
        callback()

    return on_notification


def _lease(row: Any) -> Lease:
    batch_id, account, callback_url, run, start, job_count, token, namespaces, actions, params = row
    return Lease(
        batch_id=batch_id,
        account=account,
        callback_url=callback_url,
        run=run,
        token=token,
        start=start,
        job_count=job_count,
        jobs=tuple(JobSpec(*job) for job in zip(namespaces, actions, params, strict=True)),
    )
