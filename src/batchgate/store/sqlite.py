"""The SQLite store: one file in WAL mode, written through a single connection with group commit.

Writes are Python functions run in one writer thread. Whatever queues up while a transaction
commits is run together in the next one, so many concurrent batches share a commit instead of
paying for one each, and every caller still returns only after its own change is durable; a
write that fails is run again alone, so it fails only itself. Reads run on separate connections
in a small thread pool, which WAL lets proceed beside the writer. The standard library driver is
used directly because a transaction here is many statements: an async bridge would pay a thread
hop for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
    new_token,
    worker_view_from_row,
)

T = TypeVar("T")
Q = sql.queries("sqlite")
COMMIT_SECONDS = metrics.STORE_SECONDS.labels("sqlite group commit")
Write = Callable[[sqlite3.Connection], Any]


def _settle(group: list[tuple[Write, asyncio.Future[Any]]], outcomes: list[Any]) -> None:
    """On the event loop: hands each caller of a committed group its outcome."""
    for (_, future), outcome in zip(group, outcomes, strict=True):
        if future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def path_of(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite://:memory:` -> a filename."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


class SQLiteStore(Store):
    one_host = True

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path_of(url)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        # Writes waiting for the writer thread, and whether it is draining them; both guarded by
        # the lock, so that a write added just as the writer runs dry is never left behind.
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._draining = False
        self._pending_lock = threading.Lock()

    # lifecycle -------------------------------------------------------------
    async def open(self) -> list[int]:
        if self.path != ":memory:":
            _create_private(Path(self.path))
        return await self._in_writer(self._migrate)

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.shutdown, wait=True)  # lets a drain settle its callers
        self._readers.shutdown(wait=True)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (each writer and reader thread has its own)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # timeout= is the busy timeout, set before anything that may wait for a lock
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")  # an acknowledged batch survives power loss too
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
        return conn

    def _migrate(self) -> list[int]:
        """Applies pending migrations in one IMMEDIATE transaction, so processes starting at once
        on a new file take turns instead of racing; returns the versions applied.

        Foreign keys are off meanwhile, as SQLite's recipe for rebuilding a table asks (a dropped
        table's rows would otherwise cascade), and checked before the transaction commits."""
        conn = self._connection()
        conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: set before BEGIN
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            pending = [(v, script) for v, script in sql.migrations("sqlite") if v not in applied]
            for version, script in pending:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?)", (version,))
            broken = conn.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise sqlite3.IntegrityError(f"a migration broke a foreign key: {tuple(broken)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
        return [version for version, _ in pending]

    # the two ways in: reads and grouped writes -------------------------------
    async def _in_writer(self, fn: Callable[[], T]) -> T:
        return await self._run(self._writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._readers, lambda: fn(self._connection()))

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `op` in a transaction shared with whatever other writes are waiting; returns after COMMIT."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((op, future))
            start, self._draining = not self._draining, True
        if start:
            self._writer.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: commits the waiting writes group after group until none is left.

        The next group starts as soon as the previous one is committed, without a round trip
        through the event loop, which under load is busy and would leave the writer idle."""
        while True:
            with self._pending_lock:
                group, self._pending = self._pending, []
                if not group:
                    self._draining = False
                    return
            started = time.perf_counter()
            outcomes = self._commit_group([op for op, _ in group])
            COMMIT_SECONDS.observe(time.perf_counter() - started)
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, group, outcomes)

    def _commit_group(self, ops: list[Write]) -> list[Any]:
        """Runs the ops in one transaction and returns each one's result. Should anything fail, the
        transaction is rolled back and each op runs again in a transaction of its own, so a failing
        op fails only itself and every outcome says what really happened to that op (failures are
        rare, and savepoints around every op would cost a third of the statements)."""
        conn = self._connection()
        if len(ops) > 1:
            with contextlib.suppress(Exception):
                return self._transaction(conn, ops)
        return [self._alone(conn, op) for op in ops]

    @staticmethod
    def _transaction(conn: sqlite3.Connection, ops: list[Write]) -> list[Any]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [op(conn) for op in ops]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _alone(self, conn: sqlite3.Connection, op: Write) -> Any:
        """The op's result, or the exception it (or its commit) raised, for its caller to raise."""
        try:
            return self._transaction(conn, [op])[0]
        except sqlite3.Error as exc:
            return _unavailable(exc)
        except Exception as exc:
            return exc

    async def probe(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        await self._write(lambda c: c.execute(Q["probe"]))

    # keys ------------------------------------------------------------------
    async def _insert_key(self, api_key: ApiKey) -> None:
        await self._write(
            lambda c: c.execute(
                Q["insert_key"],
                {
                    "key": api_key.key,
                    "secret": api_key.secret,
                    "account": api_key.account,
                    "created_at": api_key.created_at,
                    "webhook_secret": api_key.webhook_secret,
                },
            )
        )

    async def _get_key(self, key: str) -> ApiKey | None:
        row = await self._read(lambda c: c.execute(Q["get_key"], {"key": key}).fetchone())
        return ApiKey(*row) if row else None

    async def _list_keys(self) -> list[ApiKey]:
        rows = await self._read(lambda c: c.execute(Q["list_keys"]).fetchall())
        return [ApiKey(*row) for row in rows]

    async def _revoke_key(self, key: str, now: float) -> bool:
        cursor = await self._write(lambda c: c.execute(Q["revoke_key"], {"key": key, "now": now}))
        return bool(cursor.rowcount)

    async def _update_webhook_secrets(self, api_key: ApiKey) -> None:
        await self._write(lambda c: c.execute(Q["update_webhook_secrets"], _key_secrets(api_key)))

    async def _update_secrets(self, api_key: ApiKey) -> None:
        await self._write(lambda c: c.execute(Q["update_secrets"], _key_secrets(api_key)))

    # replays ---------------------------------------------------------------
    async def _first_use(self, request: RequestId) -> bool:
        return await self._write(lambda c: _note_request(c, request, None))

    # batches ---------------------------------------------------------------
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
        def insert(c: sqlite3.Connection) -> Submitted:
            if request is not None and idempotency is None:
                # Noted first, which tells a repeat at once: no lookup before a new batch.
                if not _note_request(c, request, batch.id):
                    return Submitted(SubmitOutcome.REPEATED, _seen(c, request))
            elif request is not None:
                seen = c.execute(Q["seen_request"], _request(request)).fetchone()
                if seen is not None:
                    return Submitted(SubmitOutcome.REPEATED, seen[0])
            if idempotency is not None:
                claimed = c.execute(
                    Q["idempotency_key"], {"account": batch.account, "key": idempotency.key}
                ).fetchone()
                if claimed is not None:
                    fingerprint, batch_id = claimed
                    if fingerprint != idempotency.fingerprint:
                        return Submitted(SubmitOutcome.CONFLICT, None)
                    if request is not None:
                        _note_request(c, request, batch_id)
                    return Submitted(SubmitOutcome.REPEATED, batch_id)
                c.execute(
                    Q["insert_idempotency_key"],
                    {
                        "account": batch.account,
                        "key": idempotency.key,
                        "fingerprint": idempotency.fingerprint,
                        "batch_id": batch.id,
                        "expires_at": idempotency.expires_at,
                    },
                )
            c.execute(
                Q["insert_batch"],
                {
                    "id": batch.id,
                    "account": batch.account,
                    "key": batch.key,
                    "callback_url": batch.callback_url,
                    "job_count": batch.job_count,
                    "status": batch.status.value,
                    "run": batch.run,
                    "created_at": batch.created_at,
                    "concurrency": batch.concurrency,
                    "destination": destination,
                    "started_at": batch.started_at,
                    "lease_owner": leasing and leasing.owner,
                    "lease_token": leasing and leasing.token,
                    "lease_expires": leasing and leasing.until,
                    "traceparent": traceparent,
                },
            )
            c.executemany(
                Q["insert_job"],
                (
                    (batch.id, i, job.namespace, job.action, job.params, job.key, _indexes(job.depends_on))
                    for i, job in enumerate(jobs)
                ),
            )
            if request is not None and idempotency is not None:
                _note_request(c, request, batch.id)
            return Submitted(SubmitOutcome.CREATED, batch.id)

        return await self._write(insert)

    async def _seen_request(self, request: RequestId) -> Sequence[Any] | None:
        return await self._read(lambda c: c.execute(Q["seen_request"], _request(request)).fetchone())

    async def _idempotent_batch(self, account: str, key: str) -> tuple[str, str] | None:
        row = await self._read(
            lambda c: c.execute(Q["idempotency_key"], {"account": account, "key": key}).fetchone()
        )
        return (row[0], row[1]) if row else None

    async def _get_batch(self, account: str, batch_id: str, now: float) -> Batch | None:
        row = await self._read(
            lambda c: c.execute(Q["get_batch"], {"id": batch_id, "account": account, "now": now}).fetchone()
        )
        return batch_from_row(row) if row else None

    async def _list_batches(
        self,
        account: str,
        status: BatchStatus | None,
        limit: int,
        before: tuple[float, str] | None,
        now: float,
    ) -> list[Batch]:
        query = {
            "account": account,
            "status": status and status.value,
            "limit": limit,
            "before_at": before and before[0],
            "before_id": before and before[1],
            "now": now,
        }
        rows = await self._read(lambda c: c.execute(Q["list_batches"], query).fetchall())
        return [batch_from_row(row) for row in rows]

    async def job_results(self, batch_id: str) -> list[JobResult]:
        rows = await self._read(lambda c: c.execute(Q["job_results"], {"batch_id": batch_id}).fetchall())
        return [job_result_from_row(row) for row in rows]

    async def delivery_states(self, batch_ids: Sequence[str]) -> dict[str, DeliveryState]:
        ids = json.dumps(list(batch_ids))
        rows = await self._read(lambda c: c.execute(Q["newest_deliveries"], {"batch_ids": ids}).fetchall())
        return {row[0]: delivery_state_from_row(row[1:]) for row in rows}

    async def _usage(self, account: str, now: float) -> Usage:
        row = await self._read(lambda c: c.execute(Q["usage"], {"account": account, "now": now}).fetchone())
        return Usage(*row)

    async def _restart(self, batch_id: str, failed_only: bool, request: RequestId | None) -> Change:
        def restart(c: sqlite3.Connection) -> Change:
            if request is not None and not _note_request(c, request, batch_id):
                return Change.REPLAYED
            if failed_only:
                if not c.execute(Q["restart_failed"], {"id": batch_id}).rowcount:
                    return Change.NOTHING
                c.execute(Q["clear_failed_responses"], {"id": batch_id})
            else:
                c.execute(Q["restart_batch"], {"id": batch_id})
                c.execute(Q["clear_responses"], {"id": batch_id})
            c.execute(Q["supersede_deliveries"], {"id": batch_id})
            return Change.DONE

        return await self._write(restart)

    async def _insert_delivery(
        self, delivery_id: str, batch_id: str, now: float, request: RequestId | None
    ) -> Change:
        def insert(c: sqlite3.Connection) -> Change:
            if request is not None and not _note_request(c, request, batch_id):
                return Change.REPLAYED
            c.execute(Q["insert_delivery"], {"id": delivery_id, "batch_id": batch_id, "now": now})
            return Change.DONE

        return await self._write(insert)

    async def _recent_deliveries(self, batch_id: str, since: float) -> list[float]:
        rows = await self._read(
            lambda c: c.execute(Q["recent_deliveries"], {"batch_id": batch_id, "since": since}).fetchall()
        )
        return [row[0] for row in rows]

    async def _cancel(
        self,
        batch_id: str,
        cancelled: str,
        now: float,
        expires_at: float,
        delivery_id: str | None,
        request: RequestId | None,
    ) -> Change:
        batch = {"id": batch_id, "now": now, "expires_at": expires_at, "cancelled": cancelled}

        def cancel(c: sqlite3.Connection) -> Change:
            if request is not None and not _note_request(c, request, batch_id):
                return Change.REPLAYED
            if c.execute(Q["cancel_unheld"], batch).rowcount:
                c.execute(Q["cancel_pending_jobs"], batch)
                if delivery_id is not None:
                    c.execute(Q["insert_delivery"], {"id": delivery_id, "batch_id": batch_id, "now": now})
                return Change.DONE
            if c.execute(Q["request_cancel"], batch).rowcount:
                return Change.REQUESTED
            return Change.FINISHED

        return await self._write(cancel)

    # the worker's side -----------------------------------------------------
    async def _claim_batches(
        self, owner: str, limit: int, now: float, lease_s: float, skip_namespaces: list[str]
    ) -> list[Lease]:
        claim = {
            "owner": owner,
            "claim": new_token()[:24],  # each batch's token: this and its id (see claim_batches)
            "until": now + lease_s,
            "now": now,
            "limit": limit,
            "skip": json.dumps(skip_namespaces),
        }

        def leases(c: sqlite3.Connection) -> list[Lease]:
            claimed = sorted(c.execute(Q["claim_batches"], claim).fetchall(), key=lambda row: row[-1])
            return [
                lease_from_rows(row[:-1], c.execute(Q["lease_jobs"], {"id": row[0]}).fetchall())
                for row in claimed
            ]

        return await self._write(leases)

    async def _advance(self, lease: Lease, finished: Sequence[Finished], *, until: float) -> Recorded:
        fenced = {"id": lease.batch_id, "token": lease.token, "until": until, **_tally(finished)}

        def advance(c: sqlite3.Connection) -> Recorded:
            # The batch row first, fenced by the lease token: nothing is written for a lost lease.
            row = c.execute(Q["advance_batch"], fenced).fetchone()
            if row is None:
                return Recorded.LOST
            _write_jobs(c, lease.batch_id, finished)
            return Recorded.CANCEL_REQUESTED if row[0] else Recorded.ADVANCED

        return await self._write(advance)

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
        fenced = {
            "id": lease.batch_id,
            "token": lease.token,
            "status": status.value,
            "now": now,
            "expires_at": expires_at,
            "cancelled_body": cancelled,
            "done": len(finished),
            **_tally(finished),
        }

        def complete(c: sqlite3.Connection) -> tuple[bool, Sequence[Any] | None]:
            if not c.execute(Q["finish_batch"], fenced).rowcount:
                return False, None
            _write_jobs(c, lease.batch_id, finished)
            if cancelled is not None:
                c.execute(
                    Q["cancel_pending_jobs"], {"id": lease.batch_id, "cancelled": cancelled, "now": now}
                )
            delivery = {"id": delivery_id, "batch_id": lease.batch_id, "now": now}
            if delivery_id is not None and delivery_leasing is not None:
                leased = {**delivery, "token": delivery_leasing.token, "until": delivery_leasing.until}
                return True, c.execute(Q["insert_leased_delivery"], leased).fetchone()
            if delivery_id is not None:
                c.execute(Q["insert_delivery"], delivery)
            return True, None

        return await self._write(complete)

    async def _renew(self, tokens: Sequence[str], until: float) -> list[str]:
        def renew(c: sqlite3.Connection) -> list[str]:
            asked = (c.execute(Q["renew_lease"], {"token": t, "until": until}).fetchone() for t in tokens)
            return [row[0] for row in asked if row is not None and row[0] is not None]

        return await self._write(renew)

    # the callback outbox ---------------------------------------------------
    async def _claim_deliveries(
        self, limit: int, now: float, lease_s: float, skip: list[str], per_destination: int
    ) -> list[Delivery]:
        due = {"now": now, "limit": limit, "skip": json.dumps(skip), "per_destination": per_destination}

        def claim(c: sqlite3.Connection) -> list[Delivery]:
            ids = [row[0] for row in c.execute(Q["due_deliveries"], due)]
            claimed = []
            for delivery_id in ids:
                token = secrets.token_hex(16)
                lease = {"id": delivery_id, "until": now + lease_s, "token": token, "now": now}
                row = c.execute(Q["lease_delivery"], lease).fetchone()
                claimed.append(delivery_from_row(row, token))
            return claimed

        return await self._write(claim)

    async def _finish_attempt(
        self, delivery: Delivery, attempt: Attempt, status: DeliveryStatus, next_at: float | None
    ) -> None:
        def finish(c: sqlite3.Connection) -> None:
            c.execute(
                Q["insert_attempt"],
                {
                    "delivery_id": attempt.delivery_id,
                    "number": attempt.number,
                    "at": attempt.at,
                    "status_code": attempt.status_code,
                    "error": attempt.error,
                    "duration_ms": attempt.duration_ms,
                },
            )
            c.execute(
                Q["finish_attempt"],
                {
                    "id": delivery.id,
                    "token": delivery.token,
                    "status": status.value,
                    "number": attempt.number,
                    "next_at": next_at,
                },
            )

        await self._write(finish)

    async def _postpone(self, delivery: Delivery, until: float) -> None:
        await self._write(
            lambda c: c.execute(
                Q["postpone_delivery"], {"id": delivery.id, "token": delivery.token, "until": until}
            )
        )

    async def next_delivery_at(self) -> float | None:
        row = await self._read(lambda c: c.execute(Q["next_delivery_at"]).fetchone())
        return float(row[0]) if row and row[0] is not None else None

    async def attempts(self, batch_id: str) -> list[Attempt]:
        rows = await self._read(
            lambda c: c.execute(Q["attempts_of_batch"], {"batch_id": batch_id}).fetchall()
        )
        return [Attempt(*row) for row in rows]

    # the operator's view ---------------------------------------------------
    async def _find_batches(
        self,
        account: str | None,
        status: str | None,
        since: float | None,
        limit: int,
        before: tuple[float, str] | None,
    ) -> list[Batch]:
        query = {
            "account": account,
            "status": status,
            "since": since,
            "limit": limit,
            "before_at": before and before[0],
            "before_id": before and before[1],
        }
        rows = await self._read(lambda c: c.execute(Q["find_batches"], query).fetchall())
        return [batch_from_row(row) for row in rows]

    async def find_batch(self, batch_id: str) -> Batch | None:
        row = await self._read(lambda c: c.execute(Q["find_batch"], {"id": batch_id}).fetchone())
        return batch_from_row(row) if row else None

    async def job_views(self, batch_id: str) -> list[JobView]:
        rows = await self._read(lambda c: c.execute(Q["job_views"], {"batch_id": batch_id}).fetchall())
        return [job_view_from_row(row) for row in rows]

    async def deliveries(self, batch_id: str) -> list[DeliveryView]:
        rows = await self._read(
            lambda c: c.execute(Q["deliveries_of_batch"], {"batch_id": batch_id}).fetchall()
        )
        return [delivery_view_from_row(row) for row in rows]

    async def _failed_deliveries(self, limit: int, before: tuple[float, str] | None) -> list[DeliveryView]:
        query = {"limit": limit, "before_at": before and before[0], "before_id": before and before[1]}
        rows = await self._read(lambda c: c.execute(Q["failed_deliveries"], query).fetchall())
        return [delivery_view_from_row(row) for row in rows]

    async def _redeliver(self, delivery_id: str, now: float) -> bool:
        cursor = await self._write(lambda c: c.execute(Q["redeliver"], {"id": delivery_id, "now": now}))
        return bool(cursor.rowcount)

    async def _touch_key(self, key: str, now: float) -> None:
        await self._write(lambda c: c.execute(Q["touch_key"], {"key": key, "now": now}))

    async def _note_worker(
        self, worker_id: str, role: str, host: str, pid: int, holding: str, now: float
    ) -> None:
        worker = {"id": worker_id, "role": role, "host": host, "pid": pid, "holding": holding, "now": now}
        await self._write(lambda c: c.execute(Q["note_worker"], worker))

    async def _forget_worker(self, worker_id: str) -> None:
        await self._write(lambda c: c.execute(Q["forget_worker"], {"id": worker_id}))

    async def _workers(self, since: float) -> list[WorkerView]:
        def workers(c: sqlite3.Connection) -> list[Any]:
            c.execute(Q["forget_silent_workers"], {"since": since})
            return c.execute(Q["workers"]).fetchall()

        return [worker_view_from_row(row) for row in await self._write(workers)]

    async def _audit(self, entry: AuditEntry) -> None:
        await self._write(lambda c: c.execute(Q["audit"], dataclasses.asdict(entry)))

    async def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        rows = await self._read(lambda c: c.execute(Q["audit_log"], {"limit": limit}).fetchall())
        return [AuditEntry(*row) for row in rows]

    async def _overview(self, now: float, minutes: int) -> Overview:
        since = now - 60 * minutes
        window = {"since": since, "since_expiry": since + self.result_ttl_s}

        def overview(c: sqlite3.Connection) -> tuple[Any, list[Any]]:
            return c.execute(Q["overview"]).fetchone(), c.execute(Q["jobs_per_minute"], window).fetchall()

        counts, per_minute = await self._read(overview)
        queued, running, oldest, pending, failed = counts
        per_minute_jobs = tuple((float(minute), int(jobs)) for minute, jobs in per_minute)
        return Overview(queued, running, oldest, pending, failed, per_minute_jobs)

    async def _purge(self, now: float) -> int:
        def purge(c: sqlite3.Connection) -> int:
            c.execute(Q["purge_requests"], {"now": now})
            c.execute(Q["purge_idempotency_keys"], {"now": now})
            return int(c.execute(Q["purge_batches"], {"now": now}).rowcount)

        return await self._write(purge)


def _key_secrets(api_key: ApiKey) -> dict[str, Any]:
    return {
        "key": api_key.key,
        "secret": api_key.secret,
        "webhook_secret": api_key.webhook_secret,
        "webhook_secret_previous": api_key.webhook_secret_previous,
        "webhook_previous_until": api_key.webhook_previous_until,
    }


def _request(request: RequestId) -> dict[str, Any]:
    return {"key": request.key, "signature": request.signature}


def _seen(c: sqlite3.Connection, request: RequestId) -> str | None:
    """The batch a signed request noted before made, if it made one."""
    row = c.execute(Q["seen_request"], _request(request)).fetchone()
    return None if row is None else row[0]


def _note_request(c: sqlite3.Connection, request: RequestId, batch_id: str | None) -> bool:
    """Notes a signed request that changes state; False when it was noted before."""
    noted = c.execute(
        Q["note_request"], {**_request(request), "expires_at": request.expires_at, "batch_id": batch_id}
    )
    return bool(noted.rowcount)


def _tally(finished: Sequence[Finished]) -> dict[str, int]:
    """What a record adds to the batch's counts."""
    return {
        "done": len(finished),
        "failed": sum(job.outcome is JobOutcome.FAILED for job in finished),
        "cancelled": sum(job.outcome is JobOutcome.CANCELLED for job in finished),
        "bytes": sum(len(job.response) for job in finished),
    }


def _write_jobs(c: sqlite3.Connection, batch_id: str, finished: Sequence[Finished]) -> None:
    c.executemany(
        Q["record_job"],
        (
            (
                job.response.decode(),
                job.outcome.value,
                job.finished_at,
                job.duration_ms,
                job.attempts,
                job.resolved_params,
                batch_id,
                job.index,
            )
            for job in finished
        ),
    )


def _indexes(indexes: tuple[int, ...]) -> str | None:
    return json.dumps(list(indexes)) if indexes else None


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"SQLite: {exc}")


def _create_private(path: Path) -> None:
    """Creates the database file, if it is new, readable by its owner only: it holds the keys' secrets.
    SQLite gives its -wal and -shm files the same permissions as the database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switches the file to WAL. SQLite answers a switch that races another connection with
    'locked' at once, without its busy timeout, so it is retried here for a while."""
    for _ in range(100):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)  # on a store thread, never on the event loop
    conn.execute("PRAGMA journal_mode = WAL")


def _statements(script: str) -> list[str]:
    """Splits a migration into statements (executescript would commit the open transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
