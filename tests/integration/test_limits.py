"""What one account, one receiver or one upstream may take, over real HTTP: quotas answered 429 with
Retry-After, fair delivery, parking behind a slow upstream, and the odds and ends of the front door
(repeated headers, revoked keys, callback URLs, file permissions, a full disk)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from batchgate.client import ApiError
from batchgate.config import build_app, parse_config
from batchgate.protocol import errors
from batchgate.protocol.signing import sign_headers
from batchgate.settings import Settings

from support import eventually, live_server, raw_post, receiver


def ping(n: int = 0) -> dict[str, Any]:
    return {"namespace": "test", "action": "echo", "params": {"n": n}}


async def refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


# quotas -----------------------------------------------------------------------------------


async def test_batches_not_yet_finished_are_limited_per_account(each_store_settings: Settings) -> None:
    settings = dataclasses.replace(each_store_settings, max_open_batches=2)
    async with live_server(settings, run_worker=False) as server, server.client() as api:
        for n in range(2):
            await api.run([ping(n)])
        error = await refused(api.run([ping(2)]))
        async with server.client(server.other_key) as other:  # another account is not held back
            await other.run([ping(3)])
    assert (error.error_code, error.specific_code) == (429, errors.TOO_MANY_OPEN_BATCHES)


async def test_a_retried_run_answers_its_batch_even_at_the_limit(each_store_settings: Settings) -> None:
    settings = dataclasses.replace(each_store_settings, max_open_batches=1)
    async with live_server(settings, run_worker=False) as server, server.client() as api:
        first = await api.run([ping()], idempotency_key="retry-me")
        assert await api.run([ping()], idempotency_key="retry-me") == first  # a retry, signed anew
        error = await refused(api.run([ping(1)], idempotency_key="another"))
    assert (error.error_code, error.specific_code) == (429, errors.TOO_MANY_OPEN_BATCHES)


async def test_the_bytes_an_accounts_results_hold_are_limited(each_store_settings: Settings) -> None:
    settings = dataclasses.replace(each_store_settings, max_result_bytes=2000)
    async with live_server(settings) as server, server.client() as api:
        await api.wait(
            await api.run([{"namespace": "test", "action": "echo", "params": {"pad": "a" * 3000}}])
        )
        await asyncio.sleep(settings.max_result_bytes and 2.1)  # the usage the API checks is cached 2 s
        error = await refused(api.run([ping()]))
    assert (error.error_code, error.specific_code) == (429, errors.RESULTS_QUOTA)


async def test_an_accounts_request_rate_is_limited_with_a_retry_after(settings: Settings) -> None:
    limited = dataclasses.replace(settings, rate_limit=5.0)  # a burst of 10, then 5 per second
    async with live_server(limited) as server:
        uri = "/api/1.0/test?action=ping"
        statuses = []
        for _ in range(15):
            headers = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=b"")
            async with (
                aiohttp.ClientSession() as session,
                session.post(server.url + uri, headers=headers) as response,
            ):
                statuses.append((response.status, response.headers.get("Retry-After"), await response.json()))
        async with server.client(server.other_key) as other:
            await other.call("test", "ping")  # its own bucket
    assert [status for status, _, _ in statuses[:10]] == [200] * 10
    status, retry_after, body = statuses[-1]
    assert (status, body["specificCode"]) == (429, errors.RATE_LIMITED) and retry_after == "1"


async def test_reposts_of_a_batch_are_limited_and_store_nothing_more(each_store_settings: Settings) -> None:
    settings = dataclasses.replace(each_store_settings, reposts_per_hour=2)
    async with receiver() as recv, live_server(settings) as server, server.client() as api:
        async_id = await api.run([ping()], callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 1)
        for _ in range(2):
            assert await api.repost(async_id)
            await asyncio.sleep(1.05)  # a new date, so a new signature: these are not replays
        error = await refused(api.repost(async_id))
        await recv.wait_for("/hook", 3)
    assert (error.error_code, error.specific_code) == (429, errors.REPOST_LIMIT)


async def test_a_replayed_repost_past_the_limit_is_refused_as_a_replay(each_store_settings: Settings) -> None:
    """The same signed repost sent again once the hour's reposts are spent: 401 / 29001 (sign the
    call again), as any replay, not 429 as if it were one more repost."""
    settings = dataclasses.replace(each_store_settings, reposts_per_hour=1)
    async with receiver() as recv, live_server(settings) as server, server.client() as api:
        async_id = await api.run([ping()], callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 1)
        uri = "/api/1.0/batch?action=repost"
        body = orjson.dumps({"async": async_id})
        headers = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=body)
        first = await raw_post(server.url, uri, body, headers)
        await recv.wait_for("/hook", 2)
        replay = await raw_post(server.url, uri, body, headers)
        await asyncio.sleep(1.05)  # a new date, so a new signature: one repost too many
        over = await refused(api.repost(async_id))
    assert first == (200, {"reposted": True})
    assert replay[0] == 401 and replay[1]["specificCode"] == errors.REPLAYED_REQUEST
    assert (over.error_code, over.specific_code) == (429, errors.REPOST_LIMIT)


# fair delivery --------------------------------------------------------------------------------


async def test_a_dead_receiver_does_not_delay_another_accounts_callback(settings: Settings) -> None:
    """One account's 30 batches call back to a receiver that never answers; another account's
    callback still arrives at once, and the dead one never has more than its share in flight."""
    hanging: list[web.Request] = []
    in_flight, peak = 0, 0
    release = asyncio.Event()

    async def never_answer(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        hanging.append(request)
        try:
            await release.wait()
        finally:
            in_flight -= 1
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/dead", never_answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    dead_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/dead"  # type: ignore[union-attr]
    fair = dataclasses.replace(settings, callback_per_destination=3, callback_timeout_s=30.0)
    try:
        async with receiver() as healthy, live_server(fair) as server, server.client() as api:
            for n in range(30):
                await api.run([ping(n)], callback_url=dead_url)
            await asyncio.sleep(0.5)  # the dead receiver's deliveries have started
            async with server.client(server.other_key) as other:
                started = time.monotonic()
                await other.run([ping()], callback_url=healthy.url + "/ok")
                await healthy.wait_for("/ok", 1, timeout_s=5)
                waited = time.monotonic() - started
            release.set()
    finally:
        release.set()
        await runner.cleanup()
    assert waited < 5 and peak == 3


async def test_a_failing_destination_is_backed_off_without_costing_its_deliveries_an_attempt(
    each_store_settings: Settings,
) -> None:
    settings = dataclasses.replace(
        each_store_settings,
        callback_breaker_threshold=3,
        callback_breaker_cooldown_s=1.5,
        callback_retry_schedule=(0.1,) * 8,
    )
    async with receiver() as recv, live_server(settings) as server, server.client() as api:
        recv.plan["/down"] = [500] * 5
        ids = [await api.run([ping(n)], callback_url=recv.url + "/down") for n in range(3)]
        await recv.wait_for("/down", 3)  # three failures in a row: backed off
        await asyncio.sleep(1.0)
        during = len(recv.received("/down"))
        await recv.wait_for("/down", 5 + len(ids), timeout_s=15)  # probes, then everything delivered

        async def callbacks() -> list[dict[str, Any]]:
            return [(await api.status(async_id))["callback"] for async_id in ids]

        # the receiver has the last POST a moment before batchgate records its answer
        states = await eventually(callbacks, until=lambda got: all(c["state"] == "delivered" for c in got))
    assert during == 3  # nothing tried while backed off
    assert sum(c["attempts"] for c in states) == 5 + len(ids)  # only real tries count


# gateway mode: a slow upstream ---------------------------------------------------------------


async def test_a_full_upstream_parks_its_batches_and_the_worker_takes_others(
    settings: Settings, tmp_path: Path
) -> None:
    slow_calls = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        slow_calls.set()
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = parse_config(
        {
            "upstreams": {
                "slow": {
                    "base_url": f"http://127.0.0.1:{port}",
                    "namespaces": ["slow"],
                    "key": "k",
                    "secret": "s",
                    "max_concurrency": 1,
                    "timeout_s": 60,
                }
            }
        }
    )
    two_slots = dataclasses.replace(settings, max_batches=2)
    try:
        async with live_server(two_slots, build_app(config)) as server, server.client() as api:
            for n in range(6):
                await api.run([{"namespace": "slow", "action": "wait", "params": {"n": n}}])
            await slow_calls.wait()
            started = time.monotonic()
            quick = await api.run([ping()])
            await api.wait(quick, poll_s=0.05, timeout_s=10)
            waited = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert waited < 10


# odds and ends of the front door ------------------------------------------------------------


async def test_two_authorization_headers_are_refused(settings: Settings) -> None:
    async with live_server(settings) as server:
        uri = "/api/1.0/test?action=ping"
        good = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=b"")
        other = sign_headers(key=server.other_key.key, secret=server.other_key.secret, uri=uri, body=b"")
        headers = [*good.items(), ("X-Api-Authorization", other["X-Api-Authorization"])]
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url + uri, headers=headers) as response,
        ):
            assert response.status == 401
            assert "given more than once" in (await response.json())["message"]


async def test_revoked_is_said_only_to_a_request_signed_with_the_keys_secret(settings: Settings) -> None:
    quick = dataclasses.replace(settings, key_cache_s=0.0)
    async with live_server(quick) as server:
        await server.service.store.revoke_key(server.key.key)
        uri = "/api/1.0/test?action=ping"
        unsigned = await raw_post(
            server.url, uri, b"", {"X-Api-Authorization": f"IWS {server.key.key}:{'0' * 40}"}
        )
        signed = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=b"")
        assert unsigned[0] == 401 and "Signature" in unsigned[1]["message"]
        assert (await raw_post(server.url, uri, b"", signed))[0] == 463


@pytest.mark.parametrize("value", [False, 0, "", [], {"url": "http://x"}])
async def test_a_callback_url_that_is_not_a_url_string_is_23016(settings: Settings, value: Any) -> None:
    async with live_server(settings, run_worker=False) as server, server.client() as api:
        error = await refused(api.call("batch", "run", {"jobs": [ping()], "callbackUrl": value}))
    assert (error.error_code, error.specific_code) == (400, errors.PARAM_INVALID)


async def test_the_allow_list_opens_one_port_and_a_numeric_host_is_called_as_checked(
    settings: Settings,
) -> None:
    async with receiver() as recv:
        port = int(recv.url.rsplit(":", 1)[1])
        one_port = dataclasses.replace(settings, callback_allow=f"127.0.0.1:{port}")
        async with live_server(one_port) as server, server.client() as api:
            other_port = await refused(api.run([ping()], callback_url=f"http://127.0.0.1:{port + 1}/hook"))
            # 2130706433 is 127.0.0.1: stored as 127.0.0.1, checked as it, called as it
            async_id = await api.run([ping()], callback_url=f"http://2130706433:{port}/numeric")
            [call] = await recv.wait_for("/numeric", 1)
    assert (other_port.error_code, other_port.specific_code) == (400, errors.PARAM_INVALID)
    assert call.json["asyncId"] == async_id and call.headers["Host"] == f"127.0.0.1:{port}"


async def test_the_sqlite_file_and_its_journal_are_readable_by_their_owner_only(settings: Settings) -> None:
    async with live_server(settings) as server, server.client() as api:
        await api.wait(await api.run([ping()]))
        path = Path(settings.db.removeprefix("sqlite:///"))
        files = [
            path,
            *[
                p
                for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
                if p.exists()
            ],
        ]
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files}
    assert len(files) >= 2 and all(mode == 0o600 for mode in modes.values()), modes


async def test_a_full_disk_refuses_run_with_24091_and_is_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_server(settings) as server, server.client() as api:
        await api.wait(await api.run([ping()]))
        path = settings.db.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        store = server.service.store

        def fill(conn: sqlite3.Connection) -> None:  # SQLite's own "database or disk is full"
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await store._in_writer(lambda: fill(store._connection()))  # type: ignore[attr-defined]
        caplog.clear()
        caplog.set_level(logging.ERROR, logger="batchgate")
        errors_seen = [
            await refused(api.run([{"namespace": "test", "action": "echo", "params": {"pad": "a" * 50_000}}]))
            for _ in range(3)
        ]
        await asyncio.sleep(1.0)  # the worker and the deliverer poll meanwhile
    assert [(e.error_code, e.specific_code) for e in errors_seen] == [(500, errors.NOT_SAVED)] * 3
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert not tracebacks
