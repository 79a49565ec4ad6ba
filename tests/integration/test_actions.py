"""Python actions over real HTTP: one answer for a direct call and a batch job, validation before
the handler runs, errors a handler raises, and sync handlers kept off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchgate import ActionContext, App, WireError, invalid_param
from batchgate.client import ApiError
from batchgate.settings import Settings

from support import LiveServer, live_server


def event_app() -> App:
    actions = App()

    @actions.action("event", "inviteContacts")
    async def invite_contacts(event: int, contacts: list[int]) -> dict[str, Any]:
        if event == 13:
            raise WireError("Event 13 is closed", error_code=403, specific_code=90013)
        if event == 666:
            raise RuntimeError("the database caught fire")
        if 0 in contacts:
            raise invalid_param("contacts", "contact 0 does not exist")
        return {"results": [{"contact": c, "status": c % 2 == 1} for c in contacts]}

    @actions.action("event", "whoami")
    def whoami(ctx: ActionContext) -> dict[str, Any]:  # a sync handler, with the call's context
        return {"account": ctx.account, "asyncId": ctx.async_id, "job": ctx.job_index}

    @actions.action("event", "unserialisable")
    async def unserialisable() -> Any:
        return {1, 2}  # a set is not JSON

    return actions


async def direct(server: LiveServer, namespace: str, action: str, params: Any) -> tuple[int, Any]:
    """A signed call, answered with its status and decoded body, error or not."""
    async with server.client() as api:
        try:
            return 200, await api.call(namespace, action, params)
        except ApiError as exc:
            return exc.status, exc.body


async def as_jobs(server: LiveServer, calls: list[tuple[str, str, Any]]) -> list[Any]:
    """The responses of the same calls made as the jobs of one batch."""
    jobs = [{"namespace": ns, "action": action, "params": params} for ns, action, params in calls]
    async with server.client() as api:
        results = await api.wait(await api.run(jobs), poll_s=0.02, timeout_s=20)
    return [result["response"] for result in results["results"]]


CASES = [
    pytest.param(("event", "inviteContacts", {"event": 1, "contacts": [1, 2]}), 200, id="success"),
    pytest.param(("event", "inviteContacts", {"contacts": [1]}), 400, id="missing-23017"),
    pytest.param(("event", "inviteContacts", {"event": "1", "contacts": [1]}), 400, id="wrong-type-23016"),
    pytest.param(("event", "inviteContacts", {"event": 1, "contacts": [1], "x": 1}), 400, id="unknown-23016"),
    pytest.param(("event", "inviteContacts", {"event": 1, "contacts": [0]}), 400, id="handler-23016"),
    pytest.param(("event", "inviteContacts", {"event": 13, "contacts": [1]}), 403, id="handler-own-codes"),
    pytest.param(("event", "inviteContacts", {"event": 666, "contacts": [1]}), 500, id="unexpected-500"),
    pytest.param(("event", "unserialisable", {}), 500, id="unserialisable-500"),
    pytest.param(("event", "nosuch", {}), 404, id="unknown-action-404"),
]


@pytest.mark.parametrize(("call", "status"), CASES)
async def test_a_direct_call_and_a_batch_job_get_the_same_answer(
    settings: Settings, call: tuple[str, str, Any], status: int
) -> None:
    async with live_server(settings, event_app()) as server:
        answered_status, answer = await direct(server, *call)
        [job_response] = await as_jobs(server, [call])
    assert answered_status == status
    assert job_response == answer


async def test_validation_errors_are_spec_shaped(settings: Settings) -> None:
    async with live_server(settings, event_app()) as server:
        _, missing = await direct(server, "event", "inviteContacts", {"contacts": [1]})
        _, wrong = await direct(server, "event", "inviteContacts", {"event": 1, "contacts": [1, "two"]})
    assert missing == {"errorCode": 400, "message": "'event' is required", "specificCode": 23017}
    assert wrong == {
        "errorCode": 400,
        "message": "'contacts' does not validate",
        "specificCode": 23016,
        "additionalMessages": ["Expected `int`, got `str` - at `$.contacts[1]`"],
    }


async def test_a_handler_can_answer_with_its_own_codes(settings: Settings) -> None:
    async with live_server(settings, event_app()) as server:
        status, body = await direct(server, "event", "inviteContacts", {"event": 13, "contacts": [1]})
    assert status == 403
    assert body == {"errorCode": 403, "message": "Event 13 is closed", "specificCode": 90013}


async def test_an_unexpected_exception_is_a_500_body_logged_with_the_job_and_the_batch_carries_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [
        ("event", "inviteContacts", {"event": 1, "contacts": [1]}),
        ("event", "inviteContacts", {"event": 666, "contacts": [1]}),
        ("event", "inviteContacts", {"event": 2, "contacts": [3]}),
    ]
    caplog.set_level(logging.ERROR, logger="batchgate.actions.registry")
    async with live_server(settings, event_app()) as server, server.client() as api:
        jobs = [{"namespace": ns, "action": action, "params": params} for ns, action, params in calls]
        async_id = await api.run(jobs)
        results = await api.wait(async_id, poll_s=0.02, timeout_s=20)
    responses = [result["response"] for result in results["results"]]
    assert responses == [
        {"results": [{"contact": 1, "status": True}]},
        {"errorCode": 500, "message": "The action failed unexpectedly"},
        {"results": [{"contact": 3, "status": True}]},
    ]
    [record] = [r for r in caplog.records if "the database caught fire" in str(r.exc_info and r.exc_info[1])]
    assert f"job {async_id}[1] event.inviteContacts failed" in record.getMessage()


async def test_a_handler_gets_the_calls_context(settings: Settings) -> None:
    async with live_server(settings, event_app()) as server:
        _, direct_answer = await direct(server, "event", "whoami", {})
        [job_answer] = await as_jobs(server, [("event", "whoami", {})])
    assert direct_answer == {"account": "acme", "asyncId": None, "job": None}
    assert job_answer["account"] == "acme"
    assert len(job_answer["asyncId"]) == 32
    assert job_answer["job"] == 0


async def test_a_blocking_sync_handler_does_not_hold_up_other_calls(settings: Settings) -> None:
    actions = App()
    started = threading.Event()

    @actions.action("slow", "block")
    def block(seconds: float) -> dict[str, float]:
        started.set()
        time.sleep(seconds)  # blocking on purpose: it runs in the thread pool, not on the loop
        return {"blocked": seconds}

    @actions.action("slow", "quick", read_only=True)  # called five times in a second, the same way
    async def quick() -> dict[str, bool]:
        return {"quick": True}

    async with live_server(settings, actions) as server:
        began = time.monotonic()
        blocked = asyncio.create_task(direct(server, "slow", "block", {"seconds": 1.0}))
        assert await asyncio.to_thread(started.wait, 5)
        latencies = []
        for action in ["quick", "quick", "quick", "quick", "quick"]:
            sent = time.monotonic()
            status, _ = await direct(server, "slow", action, {})
            latencies.append(time.monotonic() - sent)
            assert status == 200
        ping_status, _ = await direct(server, "test", "ping", {})
        still_blocking = not blocked.done()
        assert await blocked == (200, {"blocked": 1.0})
        took = time.monotonic() - began
    assert ping_status == 200
    assert still_blocking, "the other calls were answered only after the blocking one"
    assert max(latencies) < 0.25, latencies
    assert took >= 1.0


async def test_a_blocking_sync_job_does_not_hold_up_another_batch(settings: Settings) -> None:
    actions = App()

    @actions.action("slow", "block")
    def block(seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"blocked": seconds}

    async with live_server(settings, actions) as server, server.client() as api:
        slow = await api.run([{"namespace": "slow", "action": "block", "params": {"seconds": 1.0}}])
        sent = time.monotonic()
        quick = await api.run([{"namespace": "test", "action": "echo", "params": {"n": 1}}])
        await api.wait(quick, poll_s=0.02, timeout_s=5)
        quick_took = time.monotonic() - sent
        slow_progress = await api.progress(slow)
        await api.wait(slow, poll_s=0.02, timeout_s=10)
    assert slow_progress < 100
    assert quick_took < 0.6


async def test_the_example_application_serves_the_documented_shapes(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVVY_EVENTS_DB", str(tmp_path / "ivvy.db"))
    from examples.ivvy_events.app import app as example_app

    async with live_server(settings, example_app) as server, server.client() as api:
        for first in ("Ada", "Grace"):
            added = await api.call(
                "contact",
                "addOrUpdateContact",
                {"firstName": first, "lastName": "X", "email": f"{first}@x.io"},
            )
            assert added["success"] is True
        event = await api.call(
            "event", "addOrUpdateEvent", {"eventType": 12, "title": "Launch", "timezone": "Australia/Sydney"}
        )
        invited = await api.call("event", "inviteContacts", {"event": event["id"], "contacts": [1, 2, 99]})
        again = await api.call("event", "inviteContacts", {"event": event["id"], "contacts": [1]})
        contact = await api.call("contact", "getContact", {"id": 1})
        got_event = await api.call("event", "getEvent", {"id": event["id"]})
    assert event == {"success": True, "id": event["id"], "code": got_event["code"]}
    ada, grace, nobody = invited["results"]
    assert set(ada) == {"contact", "status", "inviteLinkYes", "inviteLinkNo"}
    assert (ada["contact"], ada["status"], grace["status"]) == (1, True, True)
    assert nobody == {"contact": 99, "status": False}
    assert again["results"] == [ada]  # invited once: the same links
    assert contact["firstName"] == "Ada"
    assert contact["eventInvitations"][0]["eventId"] == event["id"]
    assert got_event["title"] == "Launch"
