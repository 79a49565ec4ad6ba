"""The worker on a real store: order, concurrency, leases, fencing and graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from batchgate.actions import ActionContext, App, Reply
from batchgate.actions.testing import builtin_actions
from batchgate.models import Batch, BatchStatus, Finished, JobOutcome, JobSpec, Lease, Recorded
from batchgate.protocol.results import results_body
from batchgate.store import Store
from batchgate.worker import Worker

from support import eventually, submit


def recording_app(
    log: list[tuple[str, int]], *, hold: asyncio.Event | None = None, entered: asyncio.Event | None = None
) -> App:
    """`rec.note` logs each job; with `hold`, it signals `entered` and waits for `hold` first."""
    app = builtin_actions(sleep_cap_s=5)

    @app.action("rec", "note")
    async def note(ctx: ActionContext, **params: Any) -> dict[str, Any]:
        if hold is not None and entered is not None:
            entered.set()
            await hold.wait()
        log.append((ctx.async_id or "", ctx.job_index or 0))
        return {"index": ctx.job_index, "key": ctx.idempotency_key}

    @app.action("rec", "boom")
    def boom(**params: Any) -> None:
        raise RuntimeError("the handler broke")

    return app


async def results_of(store: Store, batch: Batch) -> Any:
    """The batch's results body, decoded."""
    return orjson.loads(results_body(batch.id, await store.job_results(batch.id)))


def jobs(count: int, action: str = "note") -> list[JobSpec]:
    return [JobSpec("rec", action, orjson.dumps({"i": i}).decode()) for i in range(count)]


async def test_jobs_of_a_batch_run_in_order_and_batches_run_together(store: Store) -> None:
    key = await store.create_key("acme")
    batches = [await submit(store, key, jobs(30), None) for _ in range(5)]
    log: list[tuple[str, int]] = []
    await Worker(store, recording_app(log), max_batches=5).run(until_idle=True)
    for batch in batches:
        assert [index for batch_id, index in log if batch_id == batch.id] == list(range(30))
    # interleaved: the worker did not run the batches one after another
    assert [batch_id for batch_id, _ in log[:5]] != [batches[0].id] * 5
    for batch in batches:
        done = await store.get_batch("acme", batch.id)
        assert done is not None and done.status is BatchStatus.COMPLETE and done.progress == 100


async def test_a_failing_handler_gives_a_500_response_and_the_batch_carries_on(store: Store) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, [*jobs(1, "boom"), *jobs(1)], None)
    await Worker(store, recording_app([])).run(until_idle=True)
    results = (await results_of(store, batch))["results"]
    assert results[0]["response"]["errorCode"] == 500
    assert results[1]["response"]["index"] == 1


async def test_the_idempotency_key_changes_with_a_restart(store: Store) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(1), None)
    app = recording_app([])
    await Worker(store, app).run(until_idle=True)
    first = (await results_of(store, batch))["results"][0]["response"]["key"]
    await store.restart(batch)
    await Worker(store, app).run(until_idle=True)
    second = (await results_of(store, batch))["results"][0]["response"]["key"]
    assert first == f"{batch.id}-1-0"
    assert second == f"{batch.id}-2-0"


async def test_a_dead_workers_batch_is_resumed_after_its_lease_expires(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(4), None)
    # A worker that claimed the batch, recorded two jobs, then died without a word.
    [lease] = await store.claim_batches("dead", limit=1, lease_s=30)
    for index in (0, 1):
        dead = Finished(index, b'{"by":"dead"}', JobOutcome.SUCCEEDED, time.time())
        assert await store.record(lease, [dead], done=index + 1, lease_s=30) is Recorded.ADVANCED
    log: list[tuple[str, int]] = []
    worker = Worker(store, recording_app(log), lease_s=5, poll_s=0.05)
    assert await store.claim_batches("early", limit=1, lease_s=1) == []  # still leased
    now = store.clock
    monkeypatch.setattr(store, "clock", lambda: now() + 31)  # the dead worker's lease has run out
    await worker.run(until_idle=True)
    assert [index for _, index in log] == [2, 3]
    responses = [r["response"] for r in (await results_of(store, batch))["results"]]
    assert responses == [
        {"by": "dead"},
        {"by": "dead"},
        {"index": 2, "key": f"{batch.id}-1-2"},
        {"index": 3, "key": f"{batch.id}-1-3"},
    ]


async def test_a_restart_takes_the_batch_away_from_its_worker(store: Store) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(3), None)
    hold, entered = asyncio.Event(), asyncio.Event()
    log: list[tuple[str, int]] = []
    worker = Worker(store, recording_app(log, hold=hold, entered=entered), poll_s=0.05)
    running = asyncio.create_task(worker.run(until_idle=True))
    await entered.wait()  # the worker is now inside job 0
    await store.restart(batch)
    hold.set()
    await running
    # The first run stopped once its write was refused; the restarted run went through all jobs,
    # and only its responses were kept.
    indexes = [index for _, index in log]
    assert indexes[-3:] == [0, 1, 2]
    assert indexes[:-3] == list(range(len(indexes) - 3))
    done = await store.get_batch("acme", batch.id)
    assert done is not None and done.run == 2 and done.status is BatchStatus.COMPLETE
    responses = [r["response"] for r in (await results_of(store, batch))["results"]]
    assert responses == [{"index": i, "key": f"{batch.id}-2-{i}"} for i in range(3)]


async def test_stop_finishes_the_current_job_and_hands_the_rest_back(store: Store) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(5), None)
    hold, entered = asyncio.Event(), asyncio.Event()
    log: list[tuple[str, int]] = []
    worker = Worker(store, recording_app(log, hold=hold, entered=entered), lease_s=60)
    running = asyncio.create_task(worker.run())
    await entered.wait()
    stopping = asyncio.create_task(worker.stop(grace_s=5))
    hold.set()
    await stopping
    await running
    assert [index for _, index in log] == [0]
    # Released at once: another worker claims it without waiting for the 60 s lease.
    [lease] = await store.claim_batches("next", limit=1, lease_s=5)
    assert (lease.batch_id, lease.done) == (batch.id, 1)


async def test_fast_jobs_share_writes_and_every_response_is_recorded_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(100), None)
    writes: list[int] = []
    record = store.record

    async def counted(lease: Lease, finished: Sequence[Finished], *, done: int, lease_s: float) -> Recorded:
        writes.append(len(finished))
        return await record(lease, finished, done=done, lease_s=lease_s)

    monkeypatch.setattr(store, "record", counted)
    await Worker(store, recording_app([])).run(until_idle=True)
    assert sum(writes) == 100
    assert len(writes) < 100  # responses were written behind the jobs, several at a time
    responses = [r["response"] for r in (await results_of(store, batch))["results"]]
    assert [r["index"] for r in responses] == list(range(100))


async def test_a_finished_job_is_saved_while_the_next_one_runs(store: Store) -> None:
    """Progress counts finished jobs: a response that comes in while the previous write is in flight
    is written as soon as that write returns, not when the next (slow) job finishes."""
    key = await store.create_key("acme")
    batch = await submit(store, key, [*jobs(3), JobSpec("rec", "gate", "{}")], None)
    log: list[tuple[str, int]] = []
    app = recording_app(log)
    gate = asyncio.Event()

    @app.action("rec", "gate")
    async def wait_at_the_gate() -> dict[str, bool]:
        await gate.wait()
        return {"passed": True}

    record = store.record
    first_write = True

    async def record_slowly(
        lease: Lease, finished: Sequence[Finished], *, done: int, lease_s: float
    ) -> Recorded:
        nonlocal first_write
        if first_write:  # the first write is still in flight when jobs 1 and 2 finish
            first_write = False
            await eventually(lambda: len(log), until=lambda count: count >= 3)
        return await record(lease, finished, done=done, lease_s=lease_s)

    store.record = record_slowly  # type: ignore[method-assign]
    worker = Worker(store, app)
    running = asyncio.create_task(worker.run(until_idle=True))
    try:
        progress = await eventually(
            lambda: store.get_batch("acme", batch.id), until=lambda b: b.done_count == 3
        )
        assert progress.progress == 75 and not gate.is_set()
    finally:
        gate.set()
        await running
    done = await store.get_batch("acme", batch.id)
    assert done is not None and done.status is BatchStatus.COMPLETE


async def test_an_unexpected_failure_in_a_batch_stops_renewing_its_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a batch's loop must not leave its lease renewed forever: the batch resumes elsewhere
    once the lease runs out, from its last recorded job."""
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(3), None)
    app = recording_app([])
    reply = app.reply

    async def broken(namespace: str, name: str, params: Any, ctx: ActionContext) -> Reply:
        if ctx.job_index == 1:
            raise RuntimeError("a bug outside any action")
        return await reply(namespace, name, params, ctx)

    monkeypatch.setattr(app, "reply", broken)
    worker = Worker(store, app, lease_s=30)
    await worker.run(until_idle=True)
    assert worker._held == set()  # nothing left for the heartbeat to renew
    assert "failed unexpectedly" in caplog.text
    assert await store.claim_batches("other", limit=1, lease_s=30) == []  # its lease still runs
    now = store.clock
    monkeypatch.setattr(store, "clock", lambda: now() + 31)
    [lease] = await store.claim_batches("other", limit=1, lease_s=30)
    assert (lease.batch_id, lease.done) == (batch.id, 1)
