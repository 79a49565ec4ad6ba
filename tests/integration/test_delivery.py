"""Callback delivery against a real local receiver: signing, retries, Retry-After, 410, redirects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from batchgate import metrics, webhooks
from batchgate.actions.testing import builtin_actions
from batchgate.delivery import Deliverer
from batchgate.destinations import Destinations
from batchgate.models import ApiKey, Batch, JobSpec
from batchgate.netguard import AddressPolicy, guarded_connector
from batchgate.protocol.results import results_body
from batchgate.retry import RetryPolicy
from batchgate.store import Store
from batchgate.worker import Worker

from support import Receiver, eventually, receiver, submit

LOOPBACK = AddressPolicy.from_spec("127.0.0.1")


@contextlib.asynccontextmanager
async def deliverer(
    store: Store,
    *,
    schedule: tuple[float, ...] = (0.05, 0.1),
    timeout_s: float = 2.0,
    policy: AddressPolicy = LOOPBACK,
) -> AsyncIterator[Deliverer]:
    async with aiohttp.ClientSession(connector=guarded_connector(policy), trust_env=False) as session:
        yield Deliverer(
            store,
            session=session,
            policy=policy,
            retry=RetryPolicy(schedule, retry_after_cap_s=2.0),
            timeout_s=timeout_s,
            poll_s=0.05,
        )


async def completed_batch(store: Store, url: str) -> tuple[ApiKey, Batch]:
    key = await store.create_key("acme")
    batch = await submit(store, key, [JobSpec("test", "echo", '{"x":1}')], url)
    await Worker(store, builtin_actions(sleep_cap_s=1)).run(until_idle=True)
    return key, batch


async def deliver_all(store: Store, recv: Receiver, path: str, **options: object) -> tuple[ApiKey, Batch]:
    key, batch = await completed_batch(store, recv.url + path)
    async with deliverer(store, **options) as loop:  # type: ignore[arg-type]
        await loop.run(until_idle=True)
    return key, batch


async def test_a_callback_is_signed_with_the_submitting_keys_secret(store: Store) -> None:
    async with receiver() as recv:
        key, batch = await deliver_all(store, recv, "/ok")
    [call] = recv.received("/ok")
    webhooks.verify(key.webhook_secret, call.headers, call.body)
    assert call.headers["Content-Type"] == "application/json"
    assert call.json == orjson.loads(results_body(batch.id, await store.job_results(batch.id)))
    [attempt] = await store.attempts(batch.id)
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, None)


async def test_failures_are_retried_with_the_same_webhook_id_and_every_attempt_recorded(store: Store) -> None:
    async with receiver() as recv:
        recv.plan["/flaky"] = [500, 503]
        _, batch = await deliver_all(store, recv, "/flaky")
    calls = recv.received("/flaky")
    assert [c.status for c in calls] == [500, 503, 200]
    assert len({c.headers["webhook-id"] for c in calls}) == 1
    attempts = await store.attempts(batch.id)
    assert [(a.number, a.status_code, a.error) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, 503, "HTTP 503"),
        (3, 200, None),
    ]


async def test_retries_stop_when_the_schedule_runs_out(store: Store) -> None:
    async with receiver() as recv:
        recv.plan["/down"] = [500] * 10
        await deliver_all(store, recv, "/down", schedule=(0.01, 0.01))
    assert len(recv.received("/down")) == 3
    assert await store.next_delivery_at() is None


async def test_a_410_stops_the_retries_at_once(store: Store) -> None:
    async with receiver() as recv:
        recv.plan["/gone"] = [410]
        await deliver_all(store, recv, "/gone")
    assert [c.status for c in recv.received("/gone")] == [410]


async def test_retry_after_is_honoured_up_to_the_cap(store: Store) -> None:
    async with receiver() as recv:
        recv.plan["/later"] = [(503, {"Retry-After": "1"})]
        await deliver_all(store, recv, "/later", schedule=(0.01,))
    first, second = recv.received("/later")
    assert second.at - first.at >= 0.5  # the schedule alone would retry after 0.01 s


async def test_redirects_are_not_followed_and_count_as_failures(store: Store) -> None:
    async with receiver() as recv:
        recv.plan["/moved"] = [(302, {"Location": "/elsewhere"})]
        _, batch = await deliver_all(store, recv, "/moved")
    assert recv.received("/elsewhere") == []
    assert [a.status_code for a in await store.attempts(batch.id)] == [302, 200]


async def test_a_slow_receiver_times_out_and_is_retried(store: Store) -> None:
    async with receiver() as recv:
        recv.delay_s["/slow"] = 0.5
        _, batch = await deliver_all(store, recv, "/slow", schedule=(0.01,), timeout_s=0.2)
    attempts = await store.attempts(batch.id)
    assert [a.error for a in attempts] == ["timed out after 0.2 s"] * 2


async def test_a_receiver_that_is_down_is_a_recorded_network_error(store: Store) -> None:
    async with receiver() as recv:
        url = recv.url
    key = await store.create_key("acme")
    batch = await submit(store, key, [JobSpec("test", "ping", "{}")], url + "/nobody")
    await Worker(store, builtin_actions(sleep_cap_s=1)).run(until_idle=True)
    async with deliverer(store, schedule=(0.01,)) as loop:
        await loop.run(until_idle=True)
    attempts = await store.attempts(batch.id)
    assert len(attempts) == 2
    assert all(a.status_code is None and "Connect" in (a.error or "") for a in attempts)


@pytest.mark.parametrize("allowed", ["", "10.0.0.0/8"])
async def test_the_address_guard_is_applied_again_at_send_time(store: Store, allowed: str) -> None:
    async with receiver() as recv:
        # allowed at submit time, then the operator's policy no longer allows loopback
        await deliver_all(store, recv, "/guarded", schedule=(0.01,), policy=AddressPolicy.from_spec(allowed))
    assert recv.received("/guarded") == []


async def test_repost_is_a_new_delivery_of_the_same_body(store: Store) -> None:
    async with receiver() as recv:
        _, batch = await deliver_all(store, recv, "/again")
        await store.repost(batch)
        async with deliverer(store) as loop:
            await loop.run(until_idle=True)
    first, second = recv.received("/again")
    assert first.body == second.body
    assert first.headers["webhook-id"] != second.headers["webhook-id"]


async def test_the_backed_off_gauge_falls_when_the_back_off_ends_without_another_attempt(
    store: Store,
) -> None:
    """The gauge is read at each scrape: an alert on it clears when the back-off ends, even when
    no callback to that destination is tried again."""
    now = [time.time()]

    def backed_off() -> float | None:
        return metrics.REGISTRY.get_sample_value("batchgate_destinations_backed_off")

    async with receiver() as recv, aiohttp.ClientSession(trust_env=False) as session:
        recv.plan["/down"] = [500]
        await completed_batch(store, recv.url + "/down")
        loop = Deliverer(
            store,
            session=session,
            policy=LOOPBACK,
            retry=RetryPolicy((3600.0,), retry_after_cap_s=2.0),
            poll_s=0.05,
            clock=lambda: now[0],
            destinations=Destinations(threshold=1, first_cooldown_s=30.0),
        )
        running = asyncio.create_task(loop.run())
        try:
            await recv.wait_for("/down", 1)
            during = await eventually(backed_off, until=lambda value: value == 1.0)
            await loop.stop(grace_s=1.0)
        finally:
            running.cancel()
        now[0] += 31.0  # the cool-down is over; nothing has been tried since
        after = backed_off()
    assert (during, after) == (1.0, 0.0)
    assert len(recv.received("/down")) == 1
