"""batchgate's own batch control over real HTTP, on SQLite and PostgreSQL: status with counts, cancel,
list, partial results, restart of failed jobs, idempotent run, replayed requests, job timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from batchgate import ActionContext, App, BadRequest
from batchgate.client import ApiError
from batchgate.protocol import errors
from batchgate.protocol.signing import sign_headers
from batchgate.settings import Settings

from support import LiveServer, eventually, live_server, raw_post, receiver


class Gates:
    """Jobs that wait until the test lets them through, and count how often each ran."""

    def __init__(self) -> None:
        self.opened: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.thread_gate = threading.Event()
        self.runs: Counter[str] = Counter()

    def gate(self, name: str) -> asyncio.Event:
        return self.opened.setdefault(name, asyncio.Event())

    def inside(self, name: str) -> asyncio.Event:
        return self.entered.setdefault(name, asyncio.Event())

    def app(self) -> App:
        app = App()

        @app.action("t", "wait")
        async def wait(name: str) -> dict[str, str]:
            self.runs[name] += 1
            self.inside(name).set()
            await self.gate(name).wait()
            return {"passed": name}

        @app.action("t", "block")
        def block(name: str) -> dict[str, str]:  # a thread: a cancel cannot stop it
            self.runs[name] += 1
            assert self.thread_gate.wait(10)
            return {"unblocked": name}

        @app.action("t", "count")
        async def count(name: str) -> dict[str, Any]:
            self.runs[name] += 1
            return {"counted": name, "times": self.runs[name]}

        @app.action("t", "fail")
        async def fail(name: str) -> None:
            self.runs[name] += 1
            raise BadRequest(f"{name} fails")

        @app.action("t", "flaky")
        async def flaky(name: str, ctx: ActionContext) -> dict[str, Any]:
            self.runs[name] += 1
            if (ctx.run or 1) < 2:
                raise BadRequest(f"{name} fails on the first run")
            return {"ok": name, "run": ctx.run}

        @app.action("t", "slow", timeout_s=0.3)
        async def slow() -> None:
            await asyncio.sleep(30)

        @app.action("t", "slow_thread", timeout_s=0.3)
        def slow_thread() -> dict[str, bool]:
            time.sleep(1.0)
            return {"late": True}

        return app


def job(action: str, name: str = "", **params: Any) -> dict[str, Any]:
    return {"namespace": "t", "action": action, "params": {"name": name, **params} if name else params}


@pytest.fixture
async def server(each_store_settings: Settings) -> AsyncIterator[tuple[LiveServer, Gates]]:
    gates = Gates()
    async with live_server(each_store_settings, gates.app()) as live:
        yield live, gates
    gates.thread_gate.set()


async def wait_for_status(server: LiveServer, async_id: str, status: str) -> dict[str, Any]:
    async with server.client() as api:
        deadline = time.monotonic() + 20
        while (found := await api.status(async_id))["status"] != status:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.02)
        return found


# status ----------------------------------------------------------------------------


async def test_status_counts_jobs_by_outcome_and_follows_the_callback(
    server: tuple[LiveServer, Gates],
) -> None:
    live, gates = server
    async with receiver() as recv, live.client() as api:
        jobs = [job("count", "a"), job("fail", "b"), job("wait", "c"), job("count", "d")]
        async_id = await api.run(jobs, callback_url=recv.url + "/hook")
        await gates.inside("c").wait()  # a and b have finished: their write may still be on its way
        running = await eventually(lambda: api.status(async_id), until=lambda s: s["counts"]["pending"] == 2)
        assert running["status"] == "running"
        assert running["counts"] == {"total": 4, "succeeded": 1, "failed": 1, "cancelled": 0, "pending": 2}
        assert running["callback"] == {
            "state": "waiting",
            "attempts": 0,
            "lastStatus": None,
            "nextAttemptAt": None,
        }
        assert running["startedAt"] and running["completedAt"] is None and running["expiresAt"] is None
        gates.gate("c").set()
        await recv.wait_for("/hook", 1)
        done = await wait_for_status(live, async_id, "complete")
        while done["callback"]["state"] != "delivered":
            done = await api.status(async_id)
    assert done["counts"] == {"total": 4, "succeeded": 3, "failed": 1, "cancelled": 0, "pending": 0}
    assert done["callback"] == {"state": "delivered", "attempts": 1, "lastStatus": 200, "nextAttemptAt": None}
    assert (
        done["completedAt"] >= done["startedAt"] >= done["createdAt"]
        and done["expiresAt"] > done["completedAt"]
    )


async def test_another_accounts_batch_has_no_status(server: tuple[LiveServer, Gates]) -> None:
    live, _ = server
    async with live.client() as api, live.client(live.other_key) as other:
        async_id = await api.run([job("count", "x")])
        with pytest.raises(ApiError) as caught:
            await other.status(async_id)
    assert (caught.value.error_code, caught.value.specific_code) == (400, errors.BATCH_NOT_FOUND)


# cancel ----------------------------------------------------------------------------


async def test_cancel_stops_a_running_async_job_and_answers_the_rest_cancelled(
    server: tuple[LiveServer, Gates],
) -> None:
    live, gates = server
    async with receiver() as recv, live.client() as api:
        jobs = [job("count", "first"), job("wait", "stuck"), job("count", "never")]
        async_id = await api.run(jobs, callback_url=recv.url + "/hook")
        await gates.inside("stuck").wait()
        assert await api.cancel(async_id) is True
        cancelled = await wait_for_status(live, async_id, "cancelled")
        results = (await api.results(async_id))["results"]
        progress = await api.progress(async_id)
        [callback] = await recv.wait_for("/hook", 1)
    assert progress == 100
    assert cancelled["counts"] == {"total": 3, "succeeded": 1, "failed": 0, "cancelled": 2, "pending": 0}
    assert results[0]["response"] == {"counted": "first", "times": 1}
    for result in results[1:]:
        assert (result["response"]["errorCode"], result["response"]["specificCode"]) == (461, 29030)
    assert "while this job ran" in results[1]["response"]["message"]
    assert gates.runs["never"] == 0
    assert callback.json == {"asyncId": async_id, "results": results}


async def test_cancel_lets_a_job_in_a_thread_finish_with_its_own_answer(
    server: tuple[LiveServer, Gates],
) -> None:
    live, gates = server
    async with live.client() as api:
        async_id = await api.run([job("block", "thread"), job("count", "never")])
        await asyncio.to_thread(lambda: eventually_true(lambda: gates.runs["thread"] == 1))
        assert await api.cancel(async_id)
        gates.thread_gate.set()
        await wait_for_status(live, async_id, "cancelled")
        results = (await api.results(async_id))["results"]
    assert results[0]["response"] == {"unblocked": "thread"}
    assert results[1]["response"]["specificCode"] == 29030
    assert gates.runs["never"] == 0


def eventually_true(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


async def test_a_batch_no_worker_holds_is_cancelled_at_once_and_calls_back(
    each_store_settings: Settings,
) -> None:
    async with receiver() as recv:
        async with live_server(each_store_settings, run_worker=False) as api_only, api_only.client() as api:
            async_id = await api.run([job("count", "a"), job("count", "b")], callback_url=recv.url + "/hook")
            assert await api.cancel(async_id)
            status = await api.status(async_id)
            assert status["status"] == "cancelled" and status["counts"]["cancelled"] == 2
        # a process with a worker delivers the callback the cancel queued
        async with live_server(each_store_settings):
            [callback] = await recv.wait_for("/hook", 1)
    assert [r["response"]["specificCode"] for r in callback.json["results"]] == [29030, 29030]


async def test_cancelling_a_finished_batch_is_a_clear_error(server: tuple[LiveServer, Gates]) -> None:
    live, _ = server
    async with live.client() as api:
        async_id = await api.run([job("count", "done")])
        await api.wait(async_id, poll_s=0.02)
        with pytest.raises(ApiError) as caught:
            await api.cancel(async_id)
    assert (caught.value.error_code, caught.value.specific_code) == (400, errors.BATCH_FINISHED)


async def test_a_cancel_reaches_a_worker_in_another_process(each_store_settings: Settings) -> None:
    """The API process has no worker: the worker running the batch hears of the cancel through a
    notification (PostgreSQL) or its heartbeat (SQLite)."""
    gates = Gates()
    async with (
        live_server(each_store_settings, gates.app(), run_worker=False) as api_only,
        live_server(each_store_settings, gates.app()) as worker_process,
        api_only.client() as api,
    ):
        async_id = await api.run([job("wait", "held"), job("count", "never")])
        await gates.inside("held").wait()
        assert await api.cancel(async_id)
        await wait_for_status(api_only, async_id, "cancelled")
        del worker_process
    assert gates.runs["never"] == 0


# list --------------------------------------------------------------------------------


async def test_list_pages_through_the_accounts_batches_newest_first(server: tuple[LiveServer, Gates]) -> None:
    live, gates = server
    async with live.client() as api, live.client(live.other_key) as other:
        mine = [await api.run([job("count", f"n{i}")]) for i in range(5)]
        stuck = await api.run([job("wait", "stuck")])
        await other.run([job("count", "theirs")])
        pages, cursor = [], None
        while True:
            page = await api.list_batches(limit=2, cursor=cursor)
            pages.append([entry["asyncId"] for entry in page["batches"]])
            if (cursor := page["nextCursor"]) is None:
                break
        for async_id in mine:
            await api.wait(async_id, poll_s=0.02)
        await gates.inside("stuck").wait()
        running = await api.list_batches(status="running")
        gates.gate("stuck").set()
        with pytest.raises(ApiError) as bad_cursor:
            await api.list_batches(cursor="not-a-cursor")
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [async_id for page in pages for async_id in page] == [stuck, *reversed(mine)]
    assert [entry["asyncId"] for entry in running["batches"]] == [stuck]
    assert running["batches"][0]["counts"]["pending"] == 1
    assert (bad_cursor.value.error_code, bad_cursor.value.specific_code) == (400, errors.PARAM_INVALID)


async def test_list_shows_each_batchs_newest_callback_as_status_does(
    server: tuple[LiveServer, Gates],
) -> None:
    """`list` reads the callbacks of a whole page at once: each entry's callback is its batch's
    newest, as `status` has it, whatever state it is in (delivered; failing and to be retried;
    reposted, its repost failing where the first delivery succeeded; none yet; no callbackUrl)."""
    live, gates = server
    async with receiver() as recv, live.client() as api:
        recv.plan["/failing"] = [503] * 20
        recv.plan["/again"] = [200] + [503] * 20  # the first delivery arrives, the repost does not
        delivered = await api.run([job("count", "d1")], callback_url=recv.url + "/ok")
        failing = await api.run([job("count", "f1")], callback_url=recv.url + "/failing")
        reposted = await api.run([job("count", "r1")], callback_url=recv.url + "/again")
        no_callback = await api.run([job("count", "n1")])
        waiting = await api.run([job("wait", "w1")], callback_url=recv.url + "/later")
        for path in ("/ok", "/failing", "/again"):
            await recv.wait_for(path, 1)
        await eventually(lambda: api.status(reposted), until=lambda s: s["callback"]["state"] == "delivered")
        assert await api.repost(reposted)
        await recv.wait_for("/again", 2)
        await gates.inside("w1").wait()

        def by_id(page: dict[str, Any]) -> dict[str, Any]:
            return {entry["asyncId"]: entry["callback"] for entry in page["batches"]}

        listed = by_id(
            await eventually(
                lambda: api.list_batches(limit=10),
                until=lambda page: (
                    by_id(page)[reposted]["lastStatus"] == 503
                    and by_id(page)[delivered]["state"] == "delivered"
                ),
            )
        )
        ids = (delivered, failing, reposted, no_callback, waiting)
        statuses = {async_id: (await api.status(async_id))["callback"] for async_id in ids}
        gates.gate("w1").set()
    assert listed[no_callback] is None
    assert listed[waiting] == {"state": "waiting", "attempts": 0, "lastStatus": None, "nextAttemptAt": None}
    assert listed[delivered] == {
        "state": "delivered",
        "attempts": 1,
        "lastStatus": 200,
        "nextAttemptAt": None,
    }
    for retried in (failing, reposted):  # the newest delivery: waiting for its next attempt
        assert (listed[retried]["state"], listed[retried]["lastStatus"]) == ("pending", 503)
        assert listed[retried]["attempts"] >= 1 and listed[retried]["nextAttemptAt"] is not None
    for async_id in ids:  # the same in both reads (attempts may have moved on in between)
        assert (listed[async_id] or {}).get("state") == (statuses[async_id] or {}).get("state"), async_id
        assert (listed[async_id] or {}).get("lastStatus") == (statuses[async_id] or {}).get("lastStatus")


# partial results --------------------------------------------------------------------


async def test_partial_results_answer_while_the_batch_runs(server: tuple[LiveServer, Gates]) -> None:
    live, gates = server
    async with live.client() as api:
        async_id = await api.run([job("count", "a"), job("fail", "b"), job("wait", "c"), job("count", "d")])
        await gates.inside("c").wait()
        partial = await eventually(
            lambda: api.results(async_id, partial=True),
            until=lambda p: p["results"][1]["status"] != "pending",
        )
        with pytest.raises(ApiError) as not_yet:
            await api.results(async_id)
        gates.gate("c").set()
    assert partial["status"] == "running"
    assert [r["status"] for r in partial["results"]] == ["succeeded", "failed", "pending", "pending"]
    assert partial["results"][0]["response"] == {"counted": "a", "times": 1}
    assert "response" not in partial["results"][2] and partial["results"][2]["request"] == {"name": "c"}
    assert (not_yet.value.error_code, not_yet.value.specific_code) == (400, errors.BATCH_NOT_COMPLETED)


# restart of failed jobs ---------------------------------------------------------------


async def test_restart_failed_only_runs_again_only_what_failed(server: tuple[LiveServer, Gates]) -> None:
    live, gates = server
    async with live.client() as api:
        async_id = await api.run([job("count", "ok"), job("flaky", "flaky"), job("count", "ok2")])
        first = await api.wait(async_id, poll_s=0.02)
        assert await api.restart(async_id, failed_only=True)
        second = await api.wait(async_id, poll_s=0.02)
        status = await api.status(async_id)
        all_good = await api.run([job("count", "fine")])
        await api.wait(all_good, poll_s=0.02)
        with pytest.raises(ApiError) as nothing:
            await api.restart(all_good, failed_only=True)
    assert first["results"][1]["response"]["errorCode"] == 400
    assert second["results"][1]["response"] == {"ok": "flaky", "run": 2}
    assert second["results"][0] == first["results"][0] and second["results"][2] == first["results"][2]
    assert gates.runs == {"ok": 1, "flaky": 2, "ok2": 1, "fine": 1}
    assert status["counts"] == {"total": 3, "succeeded": 3, "failed": 0, "cancelled": 0, "pending": 0}
    assert (nothing.value.error_code, nothing.value.specific_code) == (400, errors.NOTHING_TO_RETRY)


# idempotent run and replays -------------------------------------------------------------


async def test_the_same_idempotency_key_answers_the_first_batch_and_runs_nothing_twice(
    server: tuple[LiveServer, Gates],
) -> None:
    live, gates = server
    async with live.client() as api, live.client(live.other_key) as other:
        jobs = [job("count", "once")]
        first = await api.run(jobs, idempotency_key="order-7")
        await api.wait(first, poll_s=0.02)
        again = await api.run(jobs, idempotency_key="order-7")  # a retry: signed anew, same key
        theirs = await other.run(jobs, idempotency_key="order-7")  # keys are per account
        with pytest.raises(ApiError) as conflict:
            await api.run([job("count", "other")], idempotency_key="order-7")
        await other.wait(theirs, poll_s=0.02)
    assert again == first and theirs != first
    assert gates.runs["once"] == 2  # this account's batch once, the other account's once
    assert (conflict.value.error_code, conflict.value.specific_code) == (400, errors.IDEMPOTENCY_CONFLICT)


async def test_the_same_signed_run_sent_twice_makes_one_batch(server: tuple[LiveServer, Gates]) -> None:
    live, gates = server
    uri = "/api/1.0/batch?action=run"
    body = orjson.dumps({"jobs": [job("count", "replayed")]})
    headers = sign_headers(key=live.key.key, secret=live.key.secret, uri=uri, body=body)
    answers = [await raw_post(live.url, uri, body, headers) for _ in range(3)]
    async_id = answers[0][1]["asyncId"]
    async with live.client() as api:
        await api.wait(async_id, poll_s=0.02)
    assert answers == [(200, {"asyncId": async_id})] * 3
    assert gates.runs["replayed"] == 1


async def test_a_replayed_restart_changes_nothing_and_says_to_sign_again(
    server: tuple[LiveServer, Gates],
) -> None:
    live, gates = server
    async with live.client() as api:
        async_id = await api.run([job("count", "r")])
        await api.wait(async_id, poll_s=0.02)
    uri = "/api/1.0/batch?action=restart"
    body = orjson.dumps({"async": async_id})
    headers = sign_headers(key=live.key.key, secret=live.key.secret, uri=uri, body=body)
    first = await raw_post(live.url, uri, body, headers)
    second = await raw_post(live.url, uri, body, headers)
    read = "/api/1.0/batch?action=progress"
    read_headers = sign_headers(key=live.key.key, secret=live.key.secret, uri=read, body=body)
    reads = [await raw_post(live.url, read, body, read_headers) for _ in range(3)]
    async with live.client() as api:
        await api.wait(async_id, poll_s=0.02)
    assert first == (200, {"restarted": True})
    assert second[0] == 401 and second[1]["specificCode"] == errors.REPLAYED_REQUEST
    assert "sign the call again" in second[1]["message"]
    assert all(status == 200 for status, _ in reads)  # reads may repeat
    assert gates.runs["r"] == 2


# job timeouts ------------------------------------------------------------------------------


async def test_a_job_past_its_timeout_is_answered_461_and_the_batch_goes_on(
    server: tuple[LiveServer, Gates], caplog: pytest.LogCaptureFixture
) -> None:
    live, _ = server
    async with live.client() as api:
        async_id = await api.run([job("slow"), job("slow_thread"), job("count", "after")])
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    for timed_out in results[:2]:
        assert (timed_out["response"]["errorCode"], timed_out["response"]["specificCode"]) == (461, 29031)
        assert "did not answer within 0.3 s" in timed_out["response"]["message"]
    assert results[2]["response"] == {"counted": "after", "times": 1}
    assert "runs on in its thread" in caplog.text  # the thread could not be stopped, and says so


async def test_an_apps_own_default_timeout_goes_with_its_actions(each_store_settings: Settings) -> None:
    app = App(timeout_s=0.2)

    @app.action("t", "nap")
    async def nap() -> None:
        await asyncio.sleep(5)

    async with live_server(each_store_settings, app) as live, live.client() as api:
        results = (await api.wait(await api.run([{"namespace": "t", "action": "nap"}]), poll_s=0.02))[
            "results"
        ]
    assert "within 0.2 s" in results[0]["response"]["message"]


async def test_the_operator_sets_the_default_timeout(each_store_settings: Settings) -> None:
    app = App()

    @app.action("t", "nap")
    async def nap() -> None:
        await asyncio.sleep(5)

    settings = dataclasses.replace(each_store_settings, job_timeout_s=0.2)
    async with live_server(settings, app) as live, live.client() as api:
        results = (await api.wait(await api.run([{"namespace": "t", "action": "nap"}]), poll_s=0.02))[
            "results"
        ]
    assert results[0]["response"]["specificCode"] == 29031
