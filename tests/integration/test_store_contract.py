"""The store contract, written once and run on every backend through the `store` fixture."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from batchgate.models import (
    ApiKey,
    Attempt,
    Batch,
    BatchStatus,
    DeliveryStatus,
    Finished,
    JobOutcome,
    JobSpec,
    Lease,
    Recorded,
)
from batchgate.protocol.results import results_body
from batchgate.store import Store, StoreUnavailable, open_store, sql
from batchgate.store.base import Change
from batchgate.store.postgres import AUTOVACUUM_OFF, BATCHES_CHANNEL, CANCELS_CHANNEL, Notifier, PostgresStore

import pg
from support import submit

LEASE_S = 30.0
ADVANCED, COMPLETED = Recorded.ADVANCED, Recorded.COMPLETED


class Clock:
    """The store's clock, moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(store: Store) -> Clock:
    clock = Clock()
    store.clock = clock
    return clock


@pytest.fixture
async def key(store: Store) -> ApiKey:
    return await store.create_key("acme")


def jobs(count: int, **extra: object) -> list[JobSpec]:
    return [JobSpec("test", "echo", orjson.dumps({"n": n, **extra}).decode()) for n in range(count)]


def response(index: int) -> bytes:
    return orjson.dumps({"done": index})


async def results_of(store: Store, batch: Batch) -> bytes:
    """The batch's results body, as the `results` action answers it."""
    return results_body(batch.id, await store.job_results(batch.id))


_done: dict[str, int] = {}  # jobs recorded so far under each lease, by its token


async def record(store: Store, lease: Lease, index: int, body: bytes | None = None) -> Recorded:
    """Records one job under a lease, as the worker would, counting what the lease has recorded."""
    done = _done.get(lease.token, lease.done) + 1
    finished = Finished(index, body or response(index), JobOutcome.SUCCEEDED, time.time())
    recorded = await store.record(lease, [finished], done=done, lease_s=LEASE_S)
    if recorded is not Recorded.LOST:
        _done[lease.token] = done
    return recorded


async def record_from(store: Store, lease: Lease, start: int | None = None) -> list[Recorded]:
    """Records every job of the lease from `start` (default: its first), one at a time."""
    first = min(lease.jobs) if start is None else start
    return [await record(store, lease, index) for index in sorted(lease.jobs) if index >= first]


async def claim_one(store: Store, owner: str = "w1") -> Lease:
    [lease] = await store.claim_batches(owner, limit=1, lease_s=LEASE_S)
    return lease


# keys -------------------------------------------------------------------------


async def test_a_created_key_is_found_listed_and_revoked_once(store: Store) -> None:
    created = await store.create_key("acme")
    assert await store.get_key(created.key) == created
    assert [k.key for k in await store.list_keys()] == [created.key]
    assert await store.revoke_key(created.key)
    assert not await store.revoke_key(created.key)
    revoked = await store.get_key(created.key)
    assert revoked is not None and revoked.revoked_at is not None


async def test_an_unknown_key_is_not_found_and_cannot_be_revoked(store: Store) -> None:
    assert await store.get_key("nope") is None
    assert not await store.revoke_key("nope")


# batches, as the API sees them ---------------------------------------------------


async def test_a_submitted_batch_is_queued_and_visible_only_to_its_account(store: Store, key: ApiKey) -> None:
    batch = await submit(store, key, jobs(3), "https://example.com/cb")
    found = await store.get_batch("acme", batch.id)
    assert found == batch
    assert (found.status, found.progress, found.run, found.job_count) == (BatchStatus.QUEUED, 0, 1, 3)
    assert await store.get_batch("globex", batch.id) is None
    assert await store.get_batch("acme", "0" * 32) is None


async def test_job_params_are_kept_byte_for_byte(store: Store, key: ApiKey) -> None:
    params = '{"z": 1,  "a": [1.50, "\\u00e9", "ü"], "dup": 1, "dup": 2}'
    await submit(store, key, [JobSpec("test", "echo", params)], None)
    lease = await claim_one(store)
    assert lease.jobs[0].params == params
    await record(store, lease, 0, b'{"kept":  "as is"}')
    batch = await store.get_batch("acme", lease.batch_id)
    assert batch is not None
    [result] = orjson.loads(await results_of(store, batch))["results"]
    assert result["request"]["z"] == 1 and result["response"] == {"kept": "as is"}
    assert params.encode() in await results_of(store, batch)


# What JSON text may hold: every backend keeps each character as it was sent.
ODD_STRINGS = ['"quoted", \\ a backslash', "\x01 \x1f \t \n", "é ü 😀 \u2028", "\\u0000 is six characters"]


async def test_every_character_of_params_ids_and_responses_is_kept(store: Store, key: ApiKey) -> None:
    # JSON text as a client may space it, which is kept as sent
    texts = [orjson.dumps({"s": s, "n": n}).decode().replace(",", " ,  ") for n, s in enumerate(ODD_STRINGS)]
    pairs = list(zip(texts, ODD_STRINGS, strict=True))
    specs = [JobSpec("test", "echo", text, key=f"job {n}: {s[:8]}") for n, (text, s) in enumerate(pairs)]
    await submit(store, key, specs, None)
    lease = await claim_one(store)
    assert lease.jobs == dict(enumerate(specs))
    assert lease.keys == {spec.key: index for index, spec in enumerate(specs)}
    responses = [text.replace('"s"', '"echoed"').encode() for text in texts]
    finished = [Finished(i, body, JobOutcome.SUCCEEDED, time.time()) for i, body in enumerate(responses)]
    assert await store.record(lease, finished, done=len(specs), lease_s=LEASE_S) is COMPLETED
    results = await store.job_results(lease.batch_id)
    assert [r.params for r in results] == texts
    assert [r.response for r in results] == [body.decode() for body in responses]


async def test_results_expire_after_the_ttl(store: Store, key: ApiKey, clock: Clock) -> None:
    batch = await submit(store, key, jobs(1), None)
    await record_from(store, await claim_one(store))
    clock.advance(store.result_ttl_s - 1)
    assert await store.get_batch("acme", batch.id) is not None
    clock.advance(2)
    assert await store.get_batch("acme", batch.id) is None


async def test_a_batch_that_never_completes_does_not_expire(store: Store, key: ApiKey, clock: Clock) -> None:
    batch = await submit(store, key, jobs(1), None)
    clock.advance(10 * store.result_ttl_s)
    assert await store.get_batch("acme", batch.id) is not None


# claims, records, completion -----------------------------------------------------


async def test_a_claim_leases_queued_batches_oldest_first_with_their_jobs(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    first = await submit(store, key, jobs(3), "https://example.com/cb")
    clock.advance(1)
    second = await submit(store, key, jobs(2), None)
    leases = await store.claim_batches("w1", limit=5, lease_s=LEASE_S)
    assert [lease.batch_id for lease in leases] == [first.id, second.id]
    lease = leases[0]
    assert (lease.account, lease.callback_url, lease.run, lease.done, lease.job_count) == (
        "acme",
        "https://example.com/cb",
        1,
        0,
        3,
    )
    assert lease.jobs == dict(enumerate(jobs(3)))
    assert len({lease.token for lease in leases}) == 2
    assert await store.claim_batches("w2", limit=5, lease_s=LEASE_S) == []


async def test_a_claim_takes_no_more_than_its_limit(store: Store, key: ApiKey) -> None:
    for _ in range(5):
        await submit(store, key, jobs(1), None)
    assert len(await store.claim_batches("w1", limit=2, lease_s=LEASE_S)) == 2
    assert len(await store.claim_batches("w2", limit=10, lease_s=LEASE_S)) == 3


async def test_progress_counts_recorded_jobs_and_reads_100_only_when_complete(
    store: Store, key: ApiKey
) -> None:
    batch = await submit(store, key, jobs(3), None)
    lease = await claim_one(store)
    progress = []
    for index in range(3):
        assert await record(store, lease, index) is not Recorded.LOST
        found = await store.get_batch("acme", batch.id)
        assert found is not None
        progress.append((found.status, found.progress))
    assert progress == [
        (BatchStatus.RUNNING, 33),
        (BatchStatus.RUNNING, 66),
        (BatchStatus.COMPLETE, 100),
    ]


async def test_the_last_record_completes_the_batch_and_queues_its_callback_with_the_results(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    batch = await submit(store, key, jobs(3), "https://example.com/cb")
    assert await record_from(store, await claim_one(store)) == [ADVANCED, ADVANCED, COMPLETED]
    done = await store.get_batch("acme", batch.id)
    assert done is not None and done.status is BatchStatus.COMPLETE and done.completed_at == clock.now
    body = await results_of(store, done)
    assert orjson.loads(body) == {
        "asyncId": batch.id,
        "results": [
            {"namespace": "test", "action": "echo", "request": {"n": n}, "response": {"done": n}}
            for n in range(3)
        ],
    }
    [delivery] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert (delivery.batch_id, delivery.url) == (batch.id, "https://example.com/cb")
    assert delivery.body is None  # read from the results when it is sent: not a second copy
    assert (delivery.secrets, delivery.attempts) == ((key.webhook_secret,), 0)


async def test_a_batch_without_a_callback_completes_without_a_delivery(store: Store, key: ApiKey) -> None:
    await submit(store, key, jobs(2), None)
    await record_from(store, await claim_one(store))
    assert await store.claim_deliveries(limit=10, lease_s=LEASE_S) == []
    assert await store.next_delivery_at() is None


async def test_a_batch_completes_only_once(store: Store, key: ApiKey) -> None:
    await submit(store, key, jobs(2), "https://example.com/cb")
    lease = await claim_one(store)
    assert await record_from(store, lease) == [ADVANCED, COMPLETED]
    assert await record(store, lease, 1) is Recorded.LOST
    assert len(await store.claim_deliveries(limit=10, lease_s=LEASE_S)) == 1
    assert await store.claim_batches("w2", limit=10, lease_s=LEASE_S) == []


# leases, rescue and fencing ------------------------------------------------------


async def test_an_expired_lease_is_rescued_by_another_owner_after_the_last_recorded_job(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    await submit(store, key, jobs(4), None)
    dead = await claim_one(store, "dead")
    for index in (0, 1):
        assert await record(store, dead, index) is not Recorded.LOST
    clock.advance(LEASE_S - 1)  # each record renewed the lease
    assert await store.claim_batches("w2", limit=1, lease_s=LEASE_S) == []
    clock.advance(2)
    rescue = await claim_one(store, "w2")
    assert (rescue.batch_id, rescue.done, rescue.jobs) == (dead.batch_id, 2, {2: jobs(4)[2], 3: jobs(4)[3]})
    assert rescue.token != dead.token


async def test_an_old_lease_cannot_record_once_another_owner_holds_the_batch(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    batch = await submit(store, key, jobs(3), "https://example.com/cb")
    old = await claim_one(store, "slow")
    assert await record(store, old, 0, b'{"by": "slow"}') is not Recorded.LOST
    clock.advance(LEASE_S + 1)
    new = await claim_one(store, "fast")
    assert await record(store, old, 1, b'{"by": "slow"}') is Recorded.LOST
    assert await record_from(store, new) == [ADVANCED, COMPLETED]
    assert await record(store, old, 2, b'{"by": "slow"}') is Recorded.LOST  # cannot complete it
    done = await store.get_batch("acme", batch.id)
    assert done is not None
    results = orjson.loads(await results_of(store, done))["results"]
    assert [r["response"] for r in results] == [{"by": "slow"}, {"done": 1}, {"done": 2}]
    assert len(await store.claim_deliveries(limit=10, lease_s=LEASE_S)) == 1


async def test_an_old_lease_cannot_record_after_a_restart(store: Store, key: ApiKey) -> None:
    batch = await submit(store, key, jobs(2), None)
    old = await claim_one(store)
    assert await record(store, old, 0) is not Recorded.LOST
    await store.restart(batch)
    assert await record(store, old, 1) is Recorded.LOST
    found = await store.get_batch("acme", batch.id)
    assert found is not None and (found.status, found.done_count) == (BatchStatus.QUEUED, 0)


async def test_renew_keeps_a_lease_and_release_hands_the_batch_back_at_once(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    await submit(store, key, jobs(2), None)
    lease = await claim_one(store)
    clock.advance(LEASE_S - 1)
    await store.renew([lease.token], lease_s=LEASE_S)
    clock.advance(LEASE_S - 1)
    assert await store.claim_batches("w2", limit=1, lease_s=LEASE_S) == []
    await store.release([lease.token])
    assert (await claim_one(store, "w2")).batch_id == lease.batch_id


async def test_restart_queues_the_batch_again_from_its_first_job_with_a_new_run(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    batch = await submit(store, key, jobs(2), "https://example.com/cb")
    await record_from(store, await claim_one(store))
    await store.restart(batch)
    found = await store.get_batch("acme", batch.id)
    assert found is not None
    assert (found.status, found.run, found.done_count, found.completed_at) == (BatchStatus.QUEUED, 2, 0, None)
    clock.advance(10 * store.result_ttl_s)
    assert await store.get_batch("acme", batch.id) is not None  # no longer expires
    again = await claim_one(store)
    assert (again.run, again.done, again.jobs) == (2, 0, dict(enumerate(jobs(2))))
    assert await record_from(store, again) == [ADVANCED, COMPLETED]
    # The first run's callback, never sent, was superseded by the restart: only the second's is due.
    [delivery] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert delivery.batch_id == batch.id


async def test_a_restart_clears_the_previous_runs_responses(store: Store, key: ApiKey) -> None:
    batch = await submit(store, key, jobs(2), None)
    await record_from(store, await claim_one(store))
    await store.restart(batch)
    lease = await claim_one(store)
    await record(store, lease, 0, b'{"run": 2}')
    await store.restart(batch)
    lease = await claim_one(store)
    await record(store, lease, 0, b'{"run": 3}')
    await record(store, lease, 1, b'{"run": 3}')
    done = await store.get_batch("acme", batch.id)
    assert done is not None
    assert [r["response"] for r in orjson.loads(await results_of(store, done))["results"]] == [{"run": 3}] * 2


# the callback outbox -------------------------------------------------------------


async def complete_with_callback(store: Store, key: ApiKey) -> str:
    batch = await submit(store, key, jobs(1), "https://example.com/cb")
    await record_from(store, await claim_one(store))
    return batch.id


async def test_a_leased_delivery_is_not_claimed_again_until_its_lease_expires(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    await complete_with_callback(store, key)
    [first] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert await store.claim_deliveries(limit=10, lease_s=LEASE_S) == []
    assert await store.next_delivery_at() == clock.now + LEASE_S
    clock.advance(LEASE_S)
    [again] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert (again.id, again.body, again.attempts) == (first.id, first.body, 0)
    assert again.token != first.token


async def test_a_failed_attempt_is_retried_with_the_same_id_when_due(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    batch_id = await complete_with_callback(store, key)
    [delivery] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    attempt = Attempt(delivery.id, 1, clock.now, 503, "HTTP 503", 12.5)
    await store.finish_attempt(delivery, attempt, 60.0, DeliveryStatus.FAILED)
    assert await store.next_delivery_at() == clock.now + 60
    clock.advance(59)
    assert await store.claim_deliveries(limit=10, lease_s=LEASE_S) == []
    clock.advance(1)
    [retry] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert (retry.id, retry.attempts, retry.body) == (delivery.id, 1, delivery.body)
    second = Attempt(delivery.id, 2, clock.now, 200, None, 3.0)
    await store.finish_attempt(retry, second, None, DeliveryStatus.DELIVERED)
    assert await store.attempts(batch_id) == [attempt, second]
    assert await store.next_delivery_at() is None
    clock.advance(10 * LEASE_S)
    assert await store.claim_deliveries(limit=10, lease_s=LEASE_S) == []


async def test_a_delivery_whose_schedule_ran_out_ends_failed(store: Store, key: ApiKey, clock: Clock) -> None:
    await complete_with_callback(store, key)
    [delivery] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    attempt = Attempt(delivery.id, 1, clock.now, None, "timed out", 2000.0)
    await store.finish_attempt(delivery, attempt, None, DeliveryStatus.FAILED)
    assert await store.next_delivery_at() is None
    clock.advance(10 * LEASE_S)
    assert await store.claim_deliveries(limit=10, lease_s=LEASE_S) == []


async def test_a_stale_delivery_lease_cannot_finish_the_delivery(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    await complete_with_callback(store, key)
    [stale] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    clock.advance(LEASE_S)
    [current] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    late = Attempt(stale.id, 1, clock.now, 200, None, 1.0)
    await store.finish_attempt(stale, late, None, DeliveryStatus.DELIVERED)
    assert await store.next_delivery_at() == clock.now + LEASE_S  # still pending, still leased by d2
    done = Attempt(current.id, 2, clock.now, 200, None, 1.0)
    await store.finish_attempt(current, done, None, DeliveryStatus.DELIVERED)
    assert await store.next_delivery_at() is None


async def test_repost_queues_a_new_delivery_with_a_new_id_and_no_copy_of_the_results(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    batch_id = await complete_with_callback(store, key)
    [first] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    await store.finish_attempt(
        first, Attempt(first.id, 1, clock.now, 200, None, 1.0), None, DeliveryStatus.DELIVERED
    )
    batch = await store.get_batch("acme", batch_id)
    assert batch is not None
    await store.repost(batch)
    [again] = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert again.id != first.id and again.attempts == 0
    assert again.body is None  # both read the batch's results when they are sent


async def test_repost_of_a_batch_without_callback_queues_nothing(store: Store, key: ApiKey) -> None:
    batch = await submit(store, key, jobs(1), None)
    await record_from(store, await claim_one(store))
    await store.repost(batch)
    assert await store.next_delivery_at() is None


# housekeeping --------------------------------------------------------------------


async def test_purge_deletes_expired_batches_with_their_jobs_and_deliveries(
    store: Store, key: ApiKey, clock: Clock
) -> None:
    old_id = await complete_with_callback(store, key)
    clock.advance(store.result_ttl_s / 2)
    young_id = await complete_with_callback(store, key)
    running = await submit(store, key, jobs(1), None)
    clock.advance(store.result_ttl_s / 2)
    assert await store.purge() == 1
    assert await store.purge() == 0
    assert await store.attempts(old_id) == []
    deliveries = await store.claim_deliveries(limit=10, lease_s=LEASE_S)
    assert [d.batch_id for d in deliveries] == [young_id]
    clock.advance(10 * store.result_ttl_s)
    assert await store.get_batch("acme", running.id) is not None


# concurrency ---------------------------------------------------------------------


async def test_concurrent_claimers_never_get_the_same_batch(store: Store, key: ApiKey) -> None:
    submitted = {(await submit(store, key, jobs(2), None)).id for _ in range(60)}

    async def claimer(name: str) -> list[str]:
        got: list[str] = []
        while leases := await store.claim_batches(name, limit=2, lease_s=LEASE_S):
            got.extend(lease.batch_id for lease in leases)
        return got

    claimed = [b for got in await asyncio.gather(*(claimer(f"w{i}") for i in range(12))) for b in got]
    assert sorted(claimed) == sorted(submitted)


async def test_concurrent_workers_on_separate_stores_complete_every_batch_exactly_once(
    db_url: str, store: Store, key: ApiKey
) -> None:
    submitted = [await submit(store, key, jobs(5), "https://example.com/cb") for _ in range(30)]
    others = [open_store(db_url, result_ttl_s=3600) for _ in range(3)]
    for other in others:
        await other.open()

    async def work(worker: Store, name: str) -> None:
        while leases := await worker.claim_batches(name, limit=3, lease_s=LEASE_S):
            for lease in leases:
                assert Recorded.LOST not in await record_from(worker, lease)

    try:
        await asyncio.gather(*(work(other, f"w{i}") for i, other in enumerate(others)))
    finally:
        for other in others:
            await other.close()
    deliveries = await store.claim_deliveries(limit=100, lease_s=LEASE_S)
    assert sorted(d.batch_id for d in deliveries) == sorted(b.id for b in submitted)


async def test_restarts_racing_records_never_fail_and_leave_a_consistent_batch(
    store: Store, key: ApiKey
) -> None:
    batch = await submit(store, key, jobs(20), "https://example.com/cb")

    async def worker() -> None:
        while leases := await store.claim_batches("w", limit=1, lease_s=LEASE_S):
            await record_from(store, leases[0])

    async def restarter() -> None:
        for _ in range(10):
            await store.restart(batch)
            await asyncio.sleep(0)

    await asyncio.gather(worker(), restarter(), worker())
    await worker()  # whatever the last restart queued
    done = await store.get_batch("acme", batch.id)
    assert done is not None and done.status is BatchStatus.COMPLETE and done.run == 11
    results = orjson.loads(await results_of(store, done))["results"]
    assert [r["response"] for r in results] == [{"done": n} for n in range(20)]


# PostgreSQL only -----------------------------------------------------------------


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg.fresh_database() as url:
        yield url


@pytest.fixture
async def pg_pair(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two processes would have."""
    pair = (
        PostgresStore(pg_url, result_ttl_s=3600, listen_check_s=0.5),
        PostgresStore(pg_url, result_ttl_s=3600),
    )
    for store in pair:
        await store.open()
    yield pair
    for store in pair:
        await store.close()


class Wakes:
    """Counts listen() callbacks and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.batches = asyncio.Event()
        self.deliveries = asyncio.Event()
        self.cancels: asyncio.Queue[str] = asyncio.Queue()

    async def listen(self, store: Store) -> None:
        await store.listen(
            on_batches=self.batches.set, on_deliveries=self.deliveries.set, on_cancel=self.cancels.put_nowait
        )

    @staticmethod
    async def next(event: asyncio.Event) -> None:
        await asyncio.wait_for(event.wait(), 5)
        event.clear()


@pytest.mark.postgres
async def test_listen_wakes_on_batches_and_deliveries_queued_by_another_store(
    pg_pair: tuple[PostgresStore, PostgresStore],
) -> None:
    listener, other = pg_pair
    wakes = Wakes()
    await wakes.listen(listener)
    key = await other.create_key("acme")
    batch = await submit(other, key, jobs(1), "https://example.com/cb")
    await wakes.next(wakes.batches)
    assert not wakes.deliveries.is_set()
    await record_from(other, await claim_one(other))
    await wakes.next(wakes.deliveries)
    await other.restart(batch)
    await wakes.next(wakes.batches)
    await record_from(other, await claim_one(other))
    await wakes.next(wakes.deliveries)
    await other.repost(batch)
    await wakes.next(wakes.deliveries)
    running = await submit(other, key, jobs(2), None)
    await claim_one(other)
    assert await other.cancel(running, cancelled=b'{"cancelled": true}') is Change.REQUESTED
    assert await asyncio.wait_for(wakes.cancels.get(), 5) == running.id
    await wakes.next(wakes.batches)  # `running` was queued
    queued = await submit(other, key, jobs(2), "https://example.com/cb")
    await wakes.next(wakes.batches)
    assert await other.cancel(queued, cancelled=b'{"cancelled": true}') is Change.DONE  # no worker held it
    await wakes.next(wakes.deliveries)  # its callback


class Heard:
    """A plain LISTEN connection of the test's own, recording (channel, payload) as they arrive."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.conn: Any = None

    async def listen(self, url: str, *channels: str) -> None:
        self.conn = await asyncpg.connect(url)
        for channel in channels:
            await self.conn.add_listener(
                channel, lambda _conn, _pid, name, payload: self.queue.put_nowait((name, payload))
            )

    async def all(self, quiet_s: float = 0.5) -> list[tuple[str, str]]:
        """Everything heard until nothing more comes for `quiet_s`."""
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(await asyncio.wait_for(self.queue.get(), quiet_s))
        await self.conn.close()
        return got


@pytest.mark.postgres
async def test_notifications_asked_meanwhile_go_in_one_send(pg_url: str) -> None:
    """PostgreSQL makes the commits of notifying transactions wait for each other, so the writes
    notify no one; the notifier sends what they asked since its last send, all in one."""
    heard = Heard()
    await heard.listen(pg_url, BATCHES_CHANNEL, CANCELS_CHANNEL)
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=1)
    notifier = Notifier(lambda: pool)
    for _ in range(5):
        notifier.notify(BATCHES_CHANNEL)
    notifier.notify(CANCELS_CHANNEL, "a")
    notifier.notify(CANCELS_CHANNEL, "b")
    notifier.notify(CANCELS_CHANNEL, "a")
    await notifier.flush()
    await pool.close()
    # five sends would have been heard five times: PostgreSQL folds repeats within one transaction only
    assert await heard.all() == [(BATCHES_CHANNEL, ""), (CANCELS_CHANNEL, "a"), (CANCELS_CHANNEL, "b")]


@pytest.mark.postgres
async def test_a_store_notifies_once_its_writes_committed_and_sends_what_is_left_as_it_closes(
    pg_url: str,
) -> None:
    heard = Heard()
    await heard.listen(pg_url, BATCHES_CHANNEL, CANCELS_CHANNEL)
    store = PostgresStore(pg_url, result_ttl_s=3600)
    await store.open()
    try:
        key = await store.create_key("acme")
        running = await submit(store, key, jobs(1), None)
        await claim_one(store)
        assert await store.cancel(running, cancelled=b"{}") is Change.REQUESTED
        await submit(store, key, jobs(1), None)  # closed at once: its wake-up is still to send
    finally:
        await store.close()
    assert await heard.all() == [(BATCHES_CHANNEL, ""), (CANCELS_CHANNEL, running.id), (BATCHES_CHANNEL, "")]


@pytest.mark.postgres
async def test_listen_reconnects_after_its_connection_is_killed(
    pg_url: str, pg_pair: tuple[PostgresStore, PostgresStore]
) -> None:
    listener, other = pg_pair
    wakes = Wakes()
    await wakes.listen(listener)
    find = "SELECT pid FROM pg_stat_activity WHERE application_name = 'batchgate-listen' AND pid <> $1"
    [before] = await pg.fetch(pg_url, find, 0)
    await pg.fetch(pg_url, "SELECT pg_terminate_backend($1)", before["pid"])
    # Reconnected and listening again, it wakes the loops at once: they may have missed work.
    await wakes.next(wakes.batches)
    assert len(await pg.fetch(pg_url, find, before["pid"])) == 1
    key = await other.create_key("acme")
    await submit(other, key, jobs(1), None)
    await wakes.next(wakes.batches)


@pytest.mark.postgres
async def test_many_stores_opening_an_empty_database_at_once_migrate_it_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, result_ttl_s=3600, pool_size=1) for _ in range(8)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        rows = await pg.fetch(pg_url, "SELECT version FROM schema_migrations")
        assert [row["version"] for row in rows] == [version for version, _ in sql.migrations("postgres")]
        await stores[0].create_key("acme")
        assert len(await stores[-1].list_keys()) == 1
    finally:
        await asyncio.gather(*(store.close() for store in stores))


@pytest.mark.postgres
async def test_the_queue_tables_leave_room_for_updates_and_an_autovacuum_left_off_is_advised(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url, result_ttl_s=3600, pool_size=1)
    await store.open()
    try:
        query = "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])"
        rows = await pg.fetch(pg_url, query, ["batches", "deliveries", "jobs"])
        options = {row["relname"]: set(row["reloptions"] or []) for row in rows}
        assert {"fillfactor=70", "autovacuum_vacuum_scale_factor=0.01"} <= options["batches"]
        assert {"fillfactor=70", "autovacuum_vacuum_scale_factor=0.01"} <= options["deliveries"]
        assert "autovacuum_vacuum_scale_factor=0.02" in options["jobs"]
        # the server's own setting, whichever this server has (the CI machine's is off)
        [row] = await pg.fetch(pg_url, "SELECT current_setting('autovacuum')::bool AS on")
        assert store.advice() == ([] if row["on"] else [AUTOVACUUM_OFF])
    finally:
        await store.close()


@pytest.mark.postgres
async def test_an_unreachable_server_is_store_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", result_ttl_s=3600)
    with pytest.raises(StoreUnavailable, match="PostgreSQL"):
        await store.open()


@pytest.mark.postgres
async def test_a_statement_blocked_past_the_command_timeout_is_store_unavailable_then_recovers(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url, result_ttl_s=3600, pool_size=1, command_timeout_s=0.5)
    await store.open()
    try:
        async with pg.locked(pg_url, "api_keys"):
            with pytest.raises(StoreUnavailable, match="TimeoutError"):
                await store.list_keys()
        assert await store.list_keys() == []
    finally:
        await store.close()


def test_without_asyncpg_opening_postgres_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # None in sys.modules makes the import fail
    monkeypatch.delitem(sys.modules, "batchgate.store.postgres")
    with pytest.raises(ImportError, match=r"pip install 'batchgate\[postgres\]'"):
        open_store("postgresql://127.0.0.1/none", result_ttl_s=3600)


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_an_unreachable_test_server_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        pg.unavailable("connection refused")


@pytest.mark.postgres
async def test_leases_follow_the_databases_clock_not_a_hosts_clock_that_is_off(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # this host runs an hour ahead
    store = PostgresStore(pg_url, result_ttl_s=3600)
    await store.open()
    try:
        await submit(store, await store.create_key("acme"), jobs(1), None)
        await claim_one(store)
        [row] = await pg.fetch(
            pg_url, "SELECT lease_expires - extract(epoch FROM clock_timestamp()) AS left_s FROM batches"
        )
    finally:
        await store.close()
    assert LEASE_S - 5 < row["left_s"] <= LEASE_S  # on the database's clock; an hour more on the host's
