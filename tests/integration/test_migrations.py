"""A database written by the previous release is migrated, and every key, batch and delivery survives.

The databases in tests/fixtures/release-0.1.0 were written by release 0.1.0's own store (see the
make.py beside them). Each test copies one, reads what is in it before migrating, opens it with
today's store, and checks the same things through today's API; then uses the migrated database.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgate.models import Attempt, BatchStatus, DeliveryStatus, Finished, JobOutcome, JobSpec, Recorded
from batchgate.protocol.results import results_body
from batchgate.store import Store, open_store, sql

import pg

FIXTURE = Path(__file__).parent.parent / "fixtures" / "release-0.1.0"
LATER = 4_000_000_000.0  # a clock past every lease and retry in the fixture, before its results expire
Query = Callable[[str], Coroutine[Any, Any, list[tuple[Any, ...]]]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, Query]]:
    """The 0.1.0 database, not yet migrated: its URL, and a way to read its tables directly."""
    if request.param == "sqlite":
        path = tmp_path / "batchgate.db"
        shutil.copy(FIXTURE / "batchgate.db", path)

        async def sqlite_query(text: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                return [tuple(row) for row in conn.execute(text)]

        yield f"sqlite:///{path}", sqlite_query
        return
    async with pg.fresh_database() as url:
        await pg.execute(url, (FIXTURE / "postgres.sql").read_text())

        async def pg_query(text: str) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in await pg.fetch(url, text)]

        yield url, pg_query


KEYS = "SELECT key, secret, account, created_at, revoked_at FROM api_keys ORDER BY key"
BATCHES = (
    "SELECT id, account, key, callback_url, job_count, done_count, status, run, created_at, completed_at "
    "FROM batches ORDER BY id"
)
JOBS = "SELECT batch_id, idx, namespace, action, params, response FROM jobs ORDER BY batch_id, idx"
DELIVERIES = (
    "SELECT id, batch_id, url, body, status, attempts, next_at, created_at FROM deliveries ORDER BY id"
)
ATTEMPTS = (
    "SELECT delivery_id, number, at, status_code, error, duration_ms FROM attempts ORDER BY delivery_id"
)


async def test_every_key_batch_job_and_delivery_survives_the_migration(
    old_database: tuple[str, Query],
) -> None:
    url, query = old_database
    before = {
        name: await query(text)
        for name, text in (
            ("keys", KEYS),
            ("batches", BATCHES),
            ("jobs", JOBS),
            ("deliveries", DELIVERIES),
            ("attempts", ATTEMPTS),
        )
    }
    assert len(before["keys"]) == 3 and len(before["batches"]) == 7 and len(before["deliveries"]) == 3

    store = open_store(url, result_ttl_s=3600)
    dialect = "sqlite" if url.startswith("sqlite") else "postgres"
    assert await store.open() == [version for version, _ in sql.migrations(dialect)][1:]
    try:
        # Every key, through the store.
        for key, secret, account, created_at, revoked_at in before["keys"]:
            found = await store.get_key(key)
            assert found is not None
            assert (found.secret, found.account, found.created_at, found.revoked_at) == (
                secret,
                account,
                created_at,
                revoked_at,
            )
        # Every batch, visible to its own account only, with its jobs and results.
        for row in before["batches"]:
            batch_id, account, *_ = row
            batch = await store.get_batch(account, batch_id)
            assert batch is not None and await store.get_batch("nobody", batch_id) is None
            assert (
                batch.id,
                batch.account,
                batch.key,
                batch.callback_url,
                batch.job_count,
                batch.done_count,
                batch.status.value,
                batch.run,
                batch.created_at,
                batch.completed_at,
            ) == row
            jobs = [job[2:] for job in before["jobs"] if job[0] == batch_id]
            results = await store.job_results(batch_id)
            assert [(r.namespace, r.action, r.params, r.response) for r in results] == jobs
            # 0.1.0's finished jobs get their outcome, and its batches their counts
            assert [r.outcome for r in results] == [
                None if r.response is None else JobOutcome.SUCCEEDED for r in results
            ]
            assert batch.failed_count == 0 and batch.cancelled_count == 0
        # Every delivery and attempt, as they were.
        assert await query(DELIVERIES) == before["deliveries"]
        for batch_id in {row[1] for row in before["deliveries"]}:
            ids = {row[0] for row in before["deliveries"] if row[1] == batch_id}
            assert await store.attempts(batch_id) == [
                Attempt(*row) for row in before["attempts"] if row[0] in ids
            ]
        await _the_migrated_database_goes_on_working(store, before)
    finally:
        await store.close()


async def _the_migrated_database_goes_on_working(store: Store, before: dict[str, list[Any]]) -> None:
    store.clock = lambda: LATER
    # The callback that was retrying is due again, with the body 0.1.0 stored for it.
    [retrying] = [row for row in before["deliveries"] if row[4] == "pending"]
    [delivery] = await store.claim_deliveries(limit=10, lease_s=60)
    assert (delivery.id, delivery.attempts, delivery.body) == (retrying[0], 1, bytes(retrying[3]))
    # A key made before webhook secrets signs its callbacks with its API secret, as it did.
    [signer] = [row for row in before["keys"] if row[2] == "globex"]
    assert delivery.secrets == (signer[1],)
    assert delivery.body == results_body(delivery.batch_id, await store.job_results(delivery.batch_id))
    await store.finish_attempt(
        delivery, Attempt(delivery.id, 2, LATER, 200, None, 1.0), None, DeliveryStatus.DELIVERED
    )
    # The batches 0.1.0 left unfinished are taken up and complete, resuming after their recorded jobs.
    unfinished = {row[0]: row for row in before["batches"] if row[6] != "complete"}
    leases = await store.claim_batches("w", limit=10, lease_s=30)
    assert {lease.batch_id for lease in leases} == set(unfinished)
    for lease in leases:
        assert lease.done == unfinished[lease.batch_id][5]
        assert sorted(lease.jobs) == list(range(lease.done, lease.job_count))
        finished = [
            Finished(i, orjson.dumps({"again": i}), JobOutcome.SUCCEEDED, LATER) for i in sorted(lease.jobs)
        ]
        recorded = await store.record(lease, finished, done=lease.job_count, lease_s=30)
        assert recorded is Recorded.COMPLETED
        account = unfinished[lease.batch_id][1]
        done = await store.get_batch(account, lease.batch_id)
        assert done is not None and done.status is BatchStatus.COMPLETE
    # And a new batch goes through as on a fresh database.
    old_key = await store.get_key(before["keys"][0][0])
    assert old_key is not None
    batch = await store.submit(old_key, [JobSpec("test", "ping", "{}")], None)
    [lease] = await store.claim_batches("w", limit=10, lease_s=30)
    assert lease.batch_id == batch.batch_id
