"""The worker on a real store: order, concurrency, leases, fencing and graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from batchgate.actions import ActionContext, App, Reply
from batchgate.actions.testing import builtin_actions
from batchgate.load import BUSY_LAG_S, LoopLag
from batchgate.models import Batch, BatchStatus, Finished, JobOutcome, JobSpec, Lease, Recorded
from batchgate.protocol.results import results_body
from batchgate.store import Store
from batchgate.store.sqlite import SQLiteStore
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
    app = recording_app(log := [])
    entered: set[str] = set()
    all_in = asyncio.Event()

    @app.action("rec", "meet")
    async def meet(ctx: ActionContext, **params: Any) -> None:
        """Waits for a job of every batch: it returns only if the worker runs all five at once."""
        entered.add(ctx.async_id or "")
        if len(entered) == 5:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)

    batches = [await submit(store, key, [*jobs(1, "meet"), *jobs(30)], None) for _ in range(5)]
    await Worker(store, app, max_batches=5).run(until_idle=True)
    for batch in batches:
        assert [index for batch_id, index in log if batch_id == batch.id] == list(range(1, 31))
        done = await store.get_batch("acme", batch.id)
        assert done is not None and done.status is BatchStatus.COMPLETE and done.progress == 100
        assert (await results_of(store, batch))["results"][0]["response"] is None  # meet returned


async def test_a_worker_takes_no_batch_its_action_threads_cannot_run_and_another_worker_does(
    store: Store,
) -> None:
    """Claim what you can run: a worker whose every action thread is taken leaves the queue to
    others, which then spread it between them, instead of holding what it cannot start."""
    key = await store.create_key("acme")
    release = threading.Event()
    holders: list[str] = []

    def blocking_app() -> App:
        app = App(threads=1)

        @app.action("cpu", "hold")
        def hold(ctx: ActionContext) -> None:  # a plain def: it runs in the app's one thread
            holders.append(ctx.async_id or "")
            release.wait(10)

        return app

    batches = [await submit(store, key, [JobSpec("cpu", "hold", "{}")], None) for _ in range(3)]
    apps = [blocking_app(), blocking_app()]
    for app in apps:
        await app.startup()
    first, second = (Worker(store, app, poll_s=0.05) for app in apps)
    running = [asyncio.create_task(first.run(until_idle=True))]
    try:
        await eventually(lambda: len(holders), until=lambda count: count == 1)
        await asyncio.sleep(0.3)  # six of its admission rounds: it takes nothing more
        assert len(first._held) == 1
        running.append(asyncio.create_task(second.run(until_idle=True)))
        await eventually(lambda: len(holders), until=lambda count: count == 2)
        await asyncio.sleep(0.3)
        assert (len(first._held), len(second._held)) == (1, 1)
        queued = [await store.get_batch("acme", batch.id) for batch in batches]
        assert [b.status for b in queued if b is not None].count(BatchStatus.QUEUED) == 1
    finally:
        release.set()
        await asyncio.gather(*running)
        for app in apps:
            await app.shutdown()
    for batch in batches:
        done = await store.get_batch("acme", batch.id)
        assert done is not None and done.status is BatchStatus.COMPLETE


async def test_a_busy_worker_holds_back_only_where_another_host_could_take_the_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its event loop late, a PostgreSQL worker takes no more than the batch it runs; on
    SQLite, which one host uses, it takes all it has room for, so their writes share commits."""
    key = await store.create_key("acme")
    for _ in range(4):
        await submit(store, key, jobs(1), None)
    monkeypatch.setattr(LoopLag, "busy", property(lambda _lag: True))
    hold, entered = asyncio.Event(), asyncio.Event()
    worker = Worker(store, recording_app([], hold=hold, entered=entered), poll_s=0.05)
    running = asyncio.create_task(worker.run())
    try:
        await entered.wait()
        await asyncio.sleep(0.3)  # six admission rounds
        assert len(worker._held) == (4 if isinstance(store, SQLiteStore) else 1)
    finally:
        hold.set()
        await worker.stop(grace_s=5)
        await running


async def test_the_loop_lag_says_busy_while_the_loop_is_blocked_and_not_once_it_is_free() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(0.1)
        assert not lag.busy
        for _ in range(10):  # callbacks that hold the loop, as CPU-bound work does
            time.sleep(0.03)  # noqa: ASYNC251 (the point: the loop is held)
            await asyncio.sleep(0)
        assert lag.busy and lag.lag_s > BUSY_LAG_S
        await eventually(lambda: lag.busy, until=lambda busy: not busy, timeout_s=5)
    finally:
        lag.stop()


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


async def test_a_stop_out_of_grace_stops_the_job_in_flight_without_answering_it(store: Store) -> None:
    """A job of a sequential batch runs in the batch's own task: the worker's stop cancels it, and
    that is not the client's cancel, so the job is not answered and the batch resumes elsewhere."""
    key = await store.create_key("acme")
    batch = await submit(store, key, [JobSpec("rec", "hang", "{}"), *jobs(2)], None)
    app = recording_app([])
    entered = asyncio.Event()

    @app.action("rec", "hang")
    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    worker = Worker(store, app, lease_s=60)
    running = asyncio.create_task(worker.run())
    await entered.wait()
    await worker.stop(grace_s=0.1)
    await running
    [lease] = await store.claim_batches("next", limit=1, lease_s=5)
    assert (lease.batch_id, lease.done, lease.outcomes) == (batch.id, 0, {})
    stored = await store.get_batch("acme", batch.id)
    assert stored is not None and stored.status is BatchStatus.RUNNING


async def test_fast_jobs_share_writes_and_every_response_is_recorded_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await store.create_key("acme")
    batch = await submit(store, key, jobs(100), None)
    writes: list[int] = []
    record = store.record

    async def counted(lease: Lease, finished: Sequence[Finished], **options: Any) -> Recorded:
        writes.append(len(finished))
        return await record(lease, finished, **options)

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

    async def record_slowly(lease: Lease, finished: Sequence[Finished], **options: Any) -> Recorded:
        nonlocal first_write
        if first_write:  # the first write is still in flight when jobs 1 and 2 finish
            first_write = False
            await eventually(lambda: len(log), until=lambda count: count >= 3)
        return await record(lease, finished, **options)

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
