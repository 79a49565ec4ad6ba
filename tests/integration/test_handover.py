"""Work handed over in the transaction that writes it, on SQLite and PostgreSQL: a batch leased to
the accepting process's worker as it is saved, and a completed batch's callback leased to the
local delivery loop as it is queued. The leases are the same leases as a claim's: they expire when
their holder dies, a restart or a cancel still reaches them, and a worker without room leaves the
batch to the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from batchgate import App
from batchgate.actions import ActionContext
from batchgate.batches import Batches, Caller
from batchgate.models import (
    BatchStatus,
    Delivery,
    DeliveryStatus,
    Finished,
    JobOutcome,
    JobSpec,
    Lease,
    Recorded,
)
from batchgate.netguard import AddressPolicy
from batchgate.settings import Settings
from batchgate.store import Store
from batchgate.store.base import RequestId, Submitted
from batchgate.worker import Worker

from support import LiveServer, eventually, live_server, receiver

LOOPBACK = AddressPolicy.from_spec("127.0.0.1")


class Gated:
    """Actions that wait for the test: `g.wait` until its gate opens; each run is counted."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.inside: dict[str, asyncio.Event] = {}
        self.runs: dict[str, list[str]] = {}  # name -> who ran it, and which run, each time

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def entered(self, name: str) -> asyncio.Event:
        return self.inside.setdefault(name, asyncio.Event())

    def app(self, tag: str = "") -> App:
        app = App()

        @app.action("g", "wait")
        async def wait(ctx: ActionContext, name: str) -> dict[str, Any]:
            self.runs.setdefault(name, []).append(f"{tag}{ctx.run}")
            self.entered(name).set()
            await self.gate(name).wait()
            return {"passed": name, "run": ctx.run}

        return app


def gated(name: str) -> dict[str, Any]:
    return {"namespace": "g", "action": "wait", "params": {"name": name}}


class Spy:
    """What the store's claims returned, and what submit answered, in a live server."""

    def __init__(self, store: Store) -> None:
        self.claimed_batches: list[str] = []
        self.claimed_deliveries: list[str] = []
        self.submitted: list[Submitted] = []
        claim_batches, claim_deliveries, submit = store.claim_batches, store.claim_deliveries, store.submit

        async def batches(*args: Any, **kwargs: Any) -> list[Lease]:
            leases = await claim_batches(*args, **kwargs)
            self.claimed_batches += [lease.batch_id for lease in leases]
            return leases

        async def deliveries(*args: Any, **kwargs: Any) -> list[Delivery]:
            found = await claim_deliveries(*args, **kwargs)
            self.claimed_deliveries += [delivery.id for delivery in found]
            return found

        async def submitted(*args: Any, **kwargs: Any) -> Submitted:
            answer = await submit(*args, **kwargs)
            self.submitted.append(answer)
            return answer

        store.claim_batches = batches  # type: ignore[method-assign]
        store.claim_deliveries = deliveries  # type: ignore[method-assign]
        store.submit = submitted  # type: ignore[method-assign]

    def leased_at_submit(self, async_id: str) -> bool:
        return any(s.batch_id == async_id and s.lease is not None for s in self.submitted)


async def ready(server: LiveServer) -> Spy:
    """Spies on the server's store, once its worker and deliverer have looked at the (empty) queue:
    until then they would claim before they take anything handed over."""
    service = server.service
    assert service.worker is not None and service.deliverer is not None
    worker, deliverer = service.worker, service.deliverer
    await eventually(lambda: not worker._backlog and not deliverer._backlog)
    return Spy(service.store)


@pytest.fixture
async def gated_server(each_store_settings: Settings) -> AsyncIterator[tuple[LiveServer, Gated, Spy]]:
    gates = Gated()
    async with live_server(each_store_settings, gates.app()) as server:
        yield server, gates, await ready(server)
        for gate in gates.gates.values():
            gate.set()


async def test_a_batch_leased_at_submit_runs_and_its_callback_is_handed_over_and_sent_once(
    gated_server: tuple[LiveServer, Gated, Spy],
) -> None:
    server, gates, spy = gated_server
    async with receiver() as recv, server.client() as api:
        async_id = await api.run([gated("a"), {"namespace": "test", "action": "echo", "params": {"n": 1}}],
                                 callback_url=recv.url + "/a")  # fmt: skip
        assert spy.leased_at_submit(async_id)
        status = await api.status(async_id)
        assert status["status"] == "running" and status["startedAt"] == status["createdAt"]
        await asyncio.wait_for(gates.entered("a").wait(), 10)
        gates.gate("a").set()
        results = await api.wait(async_id, poll_s=0.02)
        [call] = await recv.wait_for("/a", 1)
        await eventually(lambda: api.status(async_id), until=lambda s: s["callback"]["state"] == "delivered")
        await asyncio.sleep(0.3)  # nothing more comes
    assert call.json == results
    assert len(recv.received("/a")) == 1
    assert async_id not in spy.claimed_batches  # neither claimed nor woken for
    assert spy.claimed_deliveries == []


async def test_a_handed_over_callback_that_fails_is_retried_as_any_other(
    gated_server: tuple[LiveServer, Gated, Spy],
) -> None:
    server, _, spy = gated_server
    async with receiver() as recv, server.client() as api:
        recv.plan["/flaky"] = [500, 503, 200]
        async_id = await api.run([{"namespace": "test", "action": "echo", "params": {}}],
                                 callback_url=recv.url + "/flaky")  # fmt: skip
        calls = await recv.wait_for("/flaky", 3)
        state = await eventually(
            lambda: api.status(async_id), until=lambda s: s["callback"]["state"] == "delivered"
        )
    assert [call.status for call in calls] == [500, 503, 200]
    assert len({call.headers["webhook-id"] for call in calls}) == 1
    assert state["callback"]["attempts"] == 3
    # The first attempt was handed over; the retries came due in the store and were claimed.
    [delivery] = await server.service.store.deliveries(async_id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert spy.claimed_deliveries == [delivery.id, delivery.id]


async def test_restart_takes_a_batch_leased_at_submit_away_from_its_worker(
    gated_server: tuple[LiveServer, Gated, Spy],
) -> None:
    server, gates, spy = gated_server
    async with server.client() as api:
        async_id = await api.run([gated("r")])
        assert spy.leased_at_submit(async_id)
        await asyncio.wait_for(gates.entered("r").wait(), 10)
        assert await api.restart(async_id)
        gates.gate("r").set()  # the first run's answer is refused: its lease was fenced
        results = (await api.wait(async_id, poll_s=0.02))["results"]
        status = await api.status(async_id)
    assert [r["response"] for r in results] == [{"passed": "r", "run": 2}]
    assert gates.runs["r"] == ["1", "2"]
    assert status["status"] == "complete"


async def test_cancel_stops_a_batch_leased_at_submit(gated_server: tuple[LiveServer, Gated, Spy]) -> None:
    server, gates, spy = gated_server
    async with receiver() as recv, server.client() as api:
        async_id = await api.run([gated("c"), gated("never")], callback_url=recv.url + "/c")
        assert spy.leased_at_submit(async_id)
        await asyncio.wait_for(gates.entered("c").wait(), 10)
        assert await api.cancel(async_id)
        [call] = await recv.wait_for("/c", 1)
        status = await api.status(async_id)
    assert status["status"] == "cancelled"
    assert status["counts"]["cancelled"] == 2
    responses = [result["response"] for result in call.json["results"]]
    assert [(r["errorCode"], r["specificCode"]) for r in responses] == [(461, 29030), (461, 29030)]
    assert "while this job ran" in responses[0]["message"]
    assert "never" not in gates.runs


# two workers on one store ------------------------------------------------------------------


def one_job(name: str) -> dict[str, Any]:
    return {"jobs": [gated(name)]}


async def started(worker: Worker) -> asyncio.Task[None]:
    """Runs a worker until it has looked at the (empty) queue once."""
    running = asyncio.create_task(worker.run())
    await eventually(lambda: not worker._backlog)
    return running


async def test_a_worker_without_room_leaves_new_batches_to_the_others(store: Store) -> None:
    key = await store.create_key("acme")
    gates = Gated()
    first = Worker(store, gates.app("first-"), max_batches=1, poll_s=0.05)
    second = Worker(store, gates.app("second-"), max_batches=1, poll_s=0.05)
    batches = Batches(store, LOOPBACK, offer_lease=first.offer, on_submit=first.wake)
    running = [await started(first)]
    try:
        held = (await batches.run(Caller(key), one_job("held")))["asyncId"]
        await asyncio.wait_for(gates.entered("held").wait(), 10)
        left = (await batches.run(Caller(key), one_job("left")))["asyncId"]
        queued = await store.get_batch("acme", left)
        assert queued is not None and queued.status is BatchStatus.QUEUED  # not leased: first is full
        running.append(asyncio.create_task(second.run()))
        await asyncio.wait_for(gates.entered("left").wait(), 10)
        gates.gate("left").set()
        await eventually(lambda: store.get_batch("acme", left), until=lambda b: b.status.finished)
        assert (await store.get_batch("acme", held)).status is BatchStatus.RUNNING  # type: ignore[union-attr]
        gates.gate("held").set()
        await eventually(lambda: store.get_batch("acme", held), until=lambda b: b.status.finished)
    finally:
        for gate in gates.gates.values():
            gate.set()
        await asyncio.gather(first.stop(grace_s=5), second.stop(grace_s=5))
        await asyncio.gather(*running)
    assert gates.runs == {"held": ["first-1"], "left": ["second-1"]}


async def test_a_batch_leased_at_submit_to_a_worker_that_dies_is_resumed_after_its_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await store.create_key("acme")
    gates = Gated()
    dying = Worker(store, gates.app("dying-"), lease_s=30, poll_s=0.05)
    batches = Batches(store, LOOPBACK, offer_lease=dying.offer, on_submit=dying.wake)
    running = await started(dying)
    async_id = (await batches.run(Caller(key), {"jobs": [gated("x"), gated("y")]}))["asyncId"]
    await asyncio.wait_for(gates.entered("x").wait(), 10)
    # It dies without a word: no release, no more heartbeats.
    for task in [running, *dying._tasks]:
        task.cancel()
    await asyncio.gather(running, *dying._tasks, return_exceptions=True)
    assert await store.claim_batches("early", limit=1, lease_s=1) == []  # its lease still runs
    now = store.clock
    monkeypatch.setattr(store, "clock", lambda: now() + 31)
    gates.gate("x").set()
    gates.gate("y").set()
    await Worker(store, gates.app("next-"), poll_s=0.05).run(until_idle=True)
    done = await store.get_batch("acme", async_id)
    assert done is not None and done.status is BatchStatus.COMPLETE
    assert gates.runs == {"x": ["dying-1", "next-1"], "y": ["next-1"]}


# the store's side --------------------------------------------------------------------------


class Taker:
    """An Offer: what a loop of this process would give the store, recording what it is handed."""

    def __init__(self, owner: str = "worker:here", lease_s: float = 30.0) -> None:
        self.owner, self.lease_s = owner, lease_s
        self.taken: list[Any] = []

    def take(self, item: Any, /) -> None:
        self.taken.append(item)


async def test_submit_leases_the_batch_it_makes_and_hands_over_the_lease(store: Store) -> None:
    key = await store.create_key("acme")
    jobs = [
        JobSpec("test", "echo", '{"a":1}', key="a"),
        JobSpec("test", "echo", '{"b":{"$ref":"a"}}', key="b", depends_on=(0,)),
    ]
    taker = Taker()
    submitted = await store.submit(key, jobs, "http://127.0.0.1:9/cb", concurrency=2, lease_to=taker)
    assert taker.taken == [submitted.lease] and submitted.lease is not None
    lease = submitted.lease
    assert (lease.batch_id, lease.run, lease.job_count, lease.concurrency) == (submitted.batch_id, 1, 2, 2)
    assert lease.jobs == dict(enumerate(jobs)) and lease.keys == {"a": 0, "b": 1}
    assert lease.callback_url == "http://127.0.0.1:9/cb" and lease.done == 0
    batch = await store.get_batch("acme", lease.batch_id)
    assert batch is not None and batch.status is BatchStatus.RUNNING
    assert batch.started_at == batch.created_at
    assert await store.claim_batches("other", limit=5, lease_s=30) == []  # held
    assert await store.renew([lease.token], lease_s=30) == []  # a lease like any other
    await store.release([lease.token])
    [claimed] = await store.claim_batches("other", limit=5, lease_s=30)
    assert claimed.batch_id == lease.batch_id and claimed.token != lease.token


async def test_a_repeated_submit_hands_nothing_over(store: Store) -> None:
    key = await store.create_key("acme")
    request = RequestId(key.key, "signature", time.time() + 600)
    first, again = Taker(), Taker()
    made = await store.submit(key, [JobSpec("test", "echo", "{}")], None, request=request, lease_to=first)
    repeated = await store.submit(key, [JobSpec("test", "echo", "{}")], None, request=request, lease_to=again)
    assert repeated.batch_id == made.batch_id and repeated.lease is None and again.taken == []


async def test_the_completing_record_hands_the_callback_over_leased(store: Store) -> None:
    key = await store.create_key("acme")
    submitted = await store.submit(
        key, [JobSpec("test", "echo", "{}")], "http://127.0.0.1:9/cb", destination="127.0.0.1:9"
    )
    [lease] = await store.claim_batches("w", limit=1, lease_s=30)
    taker = Taker(owner="deliverer", lease_s=40)
    finished = Finished(0, b'{"ok":true}', JobOutcome.SUCCEEDED, time.time())
    recorded = await store.record(lease, [finished], done=1, lease_s=30, delivery_to=taker)
    assert recorded is Recorded.COMPLETED
    [delivery] = taker.taken
    assert (delivery.batch_id, delivery.url, delivery.attempts) == (
        submitted.batch_id,
        "http://127.0.0.1:9/cb",
        0,
    )
    assert delivery.secrets == (key.webhook_secret,)  # unsealed, as a claim gives them
    assert delivery.destination == "127.0.0.1:9"
    assert await store.claim_deliveries(limit=5, lease_s=30) == []  # leased to the taker
    assert (await store.delivery_state(lease.batch_id)).status is DeliveryStatus.PENDING  # type: ignore[union-attr]
    # A lost lease hands nothing over.
    late = Taker()
    assert await store.record(lease, [finished], done=1, lease_s=30, delivery_to=late) is Recorded.LOST
    assert late.taken == []
