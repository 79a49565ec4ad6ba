"""App mode over real HTTP: namespaces forwarded to upstream APIs, as `batchgate.toml` maps them.

The main upstream is a second, real `batchgate serve` process serving the example application;
small aiohttp servers on loopback ports play upstreams that are down, slow, busy or counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from batchgate.client import build_request
from batchgate.config import ConfigError, build_app, load_config
from batchgate.protocol.signing import SignedRequest, parse_authorization, verify
from batchgate.settings import Settings

from processes import ServeProcess, batchgate, create_key
from support import LiveServer, free_port, live_server

ROOT = Path(__file__).resolve().parents[2]
STUB_KEY, STUB_SECRET = "stub-key", "stub-secret"


# -- the upstreams --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    url: str
    key: str
    secret: str


@pytest.fixture(scope="module")
def example_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """`batchgate serve --app examples.ivvy_events.app:app` in its own process."""
    folder = tmp_path_factory.mktemp("upstream")
    db = f"sqlite:///{folder / 'batchgate.db'}"
    key, secret, _ = create_key(db)
    process = ServeProcess(db, folder / "serve.log", env=example_app_env(folder)).start()
    try:
        yield Upstream(process.url, key, secret)
    finally:
        process.stop()


def example_app_env(folder: Path) -> dict[str, str]:
    """`--app` and `--app-dir` through the environment, as every serve option can be given."""
    return {
        "BATCHGATE_APP": "examples.ivvy_events.app:app",
        "BATCHGATE_APP_DIR": str(ROOT),
        "IVVY_EVENTS_DB": str(folder / "ivvy.db"),
    }


@dataclass
class Seen:
    at: float
    uri: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Stub:
    """An upstream on a loopback port: checks each call's signature, records it, answers by plan."""

    url: str = ""
    delay_s: float = 0.0
    plan: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    html: bytes | None = None  # answer this instead of JSON, as a proxy's error page would
    calls: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until_in_flight(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.in_flight >= count), 10)

    async def _count(self, change: int) -> None:
        async with self._changed:
            self.in_flight += change
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.notify_all()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(Seen(time.monotonic(), request.raw_path, dict(request.headers), body))
        await self._count(+1)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            await self._count(-1)
        signed = SignedRequest(
            method=request.method, uri=request.raw_path, headers=request.headers, body=body
        )
        key, offered = parse_authorization(request.headers.get("x-api-authorization"))
        verify(signed, secret=STUB_SECRET, offered=offered)  # a wrong signature fails the call: a 500
        assert key == STUB_KEY
        status, headers = self.plan.pop(0) if self.plan else (200, {})
        if self.html is not None:
            return web.Response(body=self.html, status=status, content_type="text/html")
        answer = {"errorCode": status, "message": "busy"} if status >= 400 else {"echo": orjson.loads(body)}
        return web.Response(
            body=orjson.dumps(answer), status=status, headers=headers, content_type="application/json"
        )


@contextlib.asynccontextmanager
async def stub(**options: Any) -> AsyncIterator[Stub]:
    upstream = Stub(**options)
    app = web.Application()
    app.router.add_post("/{tail:.*}", upstream.handle)
    # handler_cancellation: a call the gateway gave up on stops being "in flight" here too.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield upstream
    finally:
        await runner.cleanup()


# -- the gateway ----------------------------------------------------------------------------------


def write_config(path: Path, upstreams: dict[str, dict[str, Any]]) -> Path:
    """A batchgate.toml; JSON's strings, numbers and arrays are valid TOML values too."""
    lines = []
    for name, table in upstreams.items():
        lines.append(f"[upstreams.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def table(upstream: Upstream | Stub, namespaces: list[str], **options: Any) -> dict[str, Any]:
    key, secret = (
        (upstream.key, upstream.secret) if isinstance(upstream, Upstream) else (STUB_KEY, STUB_SECRET)
    )
    return {"base_url": upstream.url, "namespaces": namespaces, "key": key, "secret": secret, **options}


@contextlib.asynccontextmanager
async def gateway_server(
    settings: Settings, tmp_path: Path, upstreams: dict[str, dict[str, Any]]
) -> AsyncIterator[LiveServer]:
    config = load_config(write_config(tmp_path / "batchgate.toml", upstreams))
    async with live_server(settings, build_app(config)) as server:
        yield server


async def signed_post(
    url: str,
    key: str,
    secret: str,
    namespace: str,
    action: str,
    params: Any,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A signed call answered with its status and raw body, to compare answers byte for byte."""
    uri, body, headers = build_request(key, secret, namespace, action, params)
    headers.update(extra_headers or {})
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + uri, data=body, headers=headers) as answer,
    ):
        return answer.status, await answer.read()


async def through(server: LiveServer, namespace: str, action: str, params: Any) -> tuple[int, bytes]:
    return await signed_post(server.url, server.key.key, server.key.secret, namespace, action, params)


async def run_jobs(server: LiveServer, jobs: list[tuple[str, str, Any]], timeout_s: float = 20) -> list[Any]:
    async with server.client() as api:
        async_id = await api.run([{"namespace": ns, "action": a, "params": p} for ns, a, p in jobs])
        results = await api.wait(async_id, poll_s=0.02, timeout_s=timeout_s)
    return [result["response"] for result in results["results"]]


async def run_batches(server: LiveServer, batches: list[list[tuple[str, str, Any]]]) -> None:
    """Submits every batch at once, so the worker runs them side by side, and waits for all."""
    async with server.client() as api:
        ids = [
            await api.run([{"namespace": ns, "action": a, "params": p} for ns, a, p in b]) for b in batches
        ]
        await asyncio.gather(*(api.wait(async_id, poll_s=0.05, timeout_s=30) for async_id in ids))


# -- forwarding -----------------------------------------------------------------------------------


async def test_jobs_and_direct_calls_get_the_upstreams_answer_unchanged(
    settings: Settings, tmp_path: Path, example_upstream: Upstream
) -> None:
    up = example_upstream
    config = {"ivvy": table(up, ["contact", "event"])}
    async with gateway_server(settings, tmp_path, config) as server:
        status, added = await through(
            server,
            "contact",
            "addOrUpdateContact",
            {"firstName": "Ada", "lastName": "L", "email": "ada@x.io"},
        )
        assert status == 200
        contact_id = orjson.loads(added)["id"]
        calls: list[tuple[str, str, Any]] = [
            ("contact", "getContact", {"id": contact_id}),
            ("contact", "getContact", {}),  # 400/23017 from the upstream
            ("contact", "getContact", {"id": "one"}),  # 400/23016
            ("contact", "getContact", {"id": 987654}),  # 404
            ("contact", "noSuchAction", {}),  # 404
        ]
        job_responses = await run_jobs(server, calls)
        via_gateway = [await through(server, *call) for call in calls]
        from_upstream = [await signed_post(up.url, up.key, up.secret, *call) for call in calls]
        test_namespace = await through(server, "test", "echo", {"still": "here"})
    assert via_gateway == from_upstream  # status and body, byte for byte
    assert job_responses == [orjson.loads(body) for _, body in from_upstream]
    assert [status for status, _ in from_upstream] == [200, 400, 400, 404, 404]
    assert job_responses[0]["firstName"] == "Ada"
    assert job_responses[1] == {"errorCode": 400, "message": "'id' is required", "specificCode": 23017}
    assert test_namespace == (200, b'{"still":"here"}')  # the built-in namespace stays batchgate's


async def test_the_seed_batch_is_forwarded_with_the_documented_invite_shape(
    settings: Settings, tmp_path: Path, example_upstream: Upstream
) -> None:
    up = example_upstream
    async with gateway_server(settings, tmp_path, {"ivvy": table(up, ["contact", "event"])}) as server:
        ids = [
            orjson.loads(
                (
                    await through(
                        server,
                        "contact",
                        "addOrUpdateContact",
                        {"firstName": n, "lastName": "Q", "email": f"{n}@q.io"},
                    )
                )[1]
            )["id"]
            for n in ("a", "b")
        ]
        _, event = await through(
            server, "event", "addOrUpdateEvent", {"eventType": 12, "title": "T", "timezone": "UTC"}
        )
        event_id = orjson.loads(event)["id"]
        [response] = await run_jobs(
            server, [("event", "inviteContacts", {"event": event_id, "contacts": [*ids, 0]})]
        )
    first, second, missing = response["results"]
    assert first["contact"] == ids[0]
    assert first["status"] is True
    assert first["inviteLinkYes"].endswith("?response=yes")
    assert first["inviteLinkNo"].endswith("?response=no")
    assert second["status"] is True
    assert missing == {"contact": 0, "status": False}


# -- failures -------------------------------------------------------------------------------------


async def test_an_upstream_that_is_down_gives_a_461_after_the_retries(
    settings: Settings, tmp_path: Path
) -> None:
    down = {"base_url": f"http://127.0.0.1:{free_port()}", "namespaces": ["event"], "key": "k", "secret": "s"}
    config = {"down": {**down, "retry_delays_s": [0.05, 0.05]}}
    async with gateway_server(settings, tmp_path, config) as server:
        [response] = await run_jobs(server, [("event", "getEvent", {"id": 1})])
        status, body = await through(server, "event", "getEvent", {"id": 1})
    assert response["errorCode"] == 461
    assert response["message"].startswith("Upstream down could not be reached: Cannot connect to host")
    assert response["message"].endswith("(3 attempts)")
    assert status == 461
    assert orjson.loads(body)["errorCode"] == 461


async def test_an_upstream_slower_than_its_timeout_gives_a_461(settings: Settings, tmp_path: Path) -> None:
    async with stub(delay_s=3.0) as slow:
        config = {"slow": table(slow, ["event"], timeout_s=0.3, retry_delays_s=[0.05])}
        async with gateway_server(settings, tmp_path, config) as server:
            began = time.monotonic()
            [response] = await run_jobs(server, [("event", "getEvent", {"id": 1})])
            took = time.monotonic() - began
    assert response == {"errorCode": 461, "message": "Upstream slow did not answer within 0.3 s (2 attempts)"}
    assert len(slow.calls) == 2
    assert took < 2.0


async def test_a_429_with_retry_after_is_honoured_then_the_answer_passed_on(
    settings: Settings, tmp_path: Path
) -> None:
    async with stub(plan=[(429, {"Retry-After": "1"})]) as busy:
        config = {"busy": table(busy, ["event"], retry_delays_s=[0.05, 0.05])}
        async with gateway_server(settings, tmp_path, config) as server:
            [response] = await run_jobs(server, [("event", "getEvent", {"id": 7})])
    first, second = busy.calls
    assert response == {"echo": {"id": 7}}
    assert second.at - first.at >= 0.95  # Retry-After: 1, not the schedule's 0.05


async def test_retry_after_is_capped_and_a_lasting_429_gives_a_461(
    settings: Settings, tmp_path: Path
) -> None:
    async with stub(plan=[(429, {"Retry-After": "120"})] * 3) as busy:
        config = {"busy": table(busy, ["event"], retry_delays_s=[0.05, 0.05], retry_after_cap_s=0.2)}
        async with gateway_server(settings, tmp_path, config) as server:
            [response] = await run_jobs(server, [("event", "getEvent", {"id": 7})])
    gaps = [b.at - a.at for a, b in itertools.pairwise(busy.calls)]
    assert len(busy.calls) == 3
    assert all(0.19 <= gap < 0.6 for gap in gaps), gaps
    assert response == {
        "errorCode": 461,
        "message": "Upstream busy still answered 429 after 3 attempts",
        "additionalMessages": ['{"errorCode":429,"message":"busy"}'],
    }


async def test_the_idempotency_key_is_the_same_on_every_retry_and_new_for_a_restarted_run(
    settings: Settings, tmp_path: Path
) -> None:
    async with stub(plan=[(503, {}), (503, {})]) as flaky:
        config = {"flaky": table(flaky, ["event"], retry_delays_s=[0.05, 0.05, 0.05])}
        async with gateway_server(settings, tmp_path, config) as server, server.client() as api:
            jobs = [{"namespace": "event", "action": "getEvent", "params": {"id": n}} for n in (1, 2)]
            async_id = await api.run(jobs)
            first_run = await api.wait(async_id, poll_s=0.02, timeout_s=20)
            await api.restart(async_id)
            await api.wait(async_id, poll_s=0.02, timeout_s=20)
    keys = [call.headers["Idempotency-Key"] for call in flaky.calls]
    assert keys == [f"{async_id}-1-0"] * 3 + [f"{async_id}-1-1", f"{async_id}-2-0", f"{async_id}-2-1"]
    assert [r["response"] for r in first_run["results"]] == [{"echo": {"id": 1}}, {"echo": {"id": 2}}]
    assert flaky.calls[0].uri == "/api/1.0/event?action=getEvent"
    assert flaky.calls[0].body == b'{"id":1}'


async def test_a_direct_call_passes_on_its_clients_idempotency_key_scoped_by_account(
    settings: Settings, tmp_path: Path
) -> None:
    async with stub(plan=[(503, {})]) as flaky:
        # getEvent changes nothing: the same signed call may be forwarded again
        config = {"flaky": table(flaky, ["event"], retry_delays_s=[0.05], read_only=["event.getEvent"])}
        async with gateway_server(settings, tmp_path, config) as server:
            client_key = {"Idempotency-Key": "order-42"}
            for key in (server.key, server.key, server.other_key):
                call = ("event", "getEvent", {}, client_key)
                status, _ = await signed_post(server.url, key.key, key.secret, *call)
                assert status == 200
            for _ in range(2):
                status, _ = await through(server, "event", "getEvent", {})
                assert status == 200
            async with server.client() as api:  # the Python client sends one when given one
                await api.call("event", "getEvent", {}, idempotency_key="order-42")
    keys = [call.headers["Idempotency-Key"] for call in flaky.calls]
    first_try, retry, again, other_account, no_key, no_key_again, from_client = keys
    assert from_client == first_try
    assert first_try == retry == again  # a client retrying with its key, and batchgate's own retry
    assert "order-42" not in first_try  # the client's key is not handed to the upstream as it is
    assert other_account != first_try  # another account's same key is another key upstream
    assert no_key != no_key_again  # without a key, each direct call gets its own


async def test_an_answer_that_is_not_json_gives_a_461(settings: Settings, tmp_path: Path) -> None:
    async with (
        stub(plan=[(502, {})], html=b"<html>502 Bad App</html>") as proxy,
        gateway_server(settings, tmp_path, {"proxy": table(proxy, ["event"])}) as server,
    ):
        [response] = await run_jobs(server, [("event", "getEvent", {"id": 1})])
    assert response == {
        "errorCode": 461,
        "message": "Upstream proxy answered 502 with a body that is not JSON",
        "additionalMessages": ["<html>502 Bad App</html>"],
    }


async def test_a_base_url_with_a_path_is_kept_and_signed(settings: Settings, tmp_path: Path) -> None:
    async with stub() as prefixed:
        config = {"prefixed": {**table(prefixed, ["event"]), "base_url": prefixed.url + "/ivvy/"}}
        async with gateway_server(settings, tmp_path, config) as server:
            [response] = await run_jobs(server, [("event", "get Event&x=1", {"id": 1})])
    assert response == {"echo": {"id": 1}}  # the stub verified the signature of exactly this URI
    assert prefixed.calls[0].uri == "/ivvy/api/1.0/event?action=get%20Event%26x%3D1"


# -- limits ---------------------------------------------------------------------------------------


async def test_the_concurrency_limit_holds(settings: Settings, tmp_path: Path) -> None:
    async with stub(delay_s=0.2) as counted:
        config = {"counted": table(counted, ["event"], max_concurrency=3)}
        async with gateway_server(settings, tmp_path, config) as server:
            await run_batches(server, [[("event", "getEvent", {"id": n})] * 2 for n in range(8)])
    assert len(counted.calls) == 16
    assert counted.max_in_flight == 3  # 8 batches ran side by side, never more than 3 calls at once


async def test_the_rate_limit_holds(settings: Settings, tmp_path: Path) -> None:
    async with stub() as counted:
        config = {"counted": table(counted, ["event"], rate_per_s=10, max_concurrency=10)}
        async with gateway_server(settings, tmp_path, config) as server:
            await run_batches(server, [[("event", "getEvent", {"id": n})] * 3 for n in range(6)])
    arrivals = sorted(call.at for call in counted.calls)
    most_in_a_second = max(sum(1 for t in arrivals if start <= t <= start + 1.0) for start in arrivals)
    # No burst: each start waited for its slot, 0.1 s after the one before. Measured over two slots,
    # as the stub sees them: one call held up on its way (by a busy loop) narrows the gap after it.
    spans = [c - a for a, c in zip(arrivals, arrivals[2:], strict=False)]
    assert len(arrivals) == 18
    assert most_in_a_second <= 11  # 10 per second: starts 0.1 s apart, so a closed 1 s window holds 11
    assert min(spans) >= 0.12, spans
    assert arrivals[-1] - arrivals[0] >= 1.6


async def test_a_slow_upstream_stalls_neither_another_upstream_nor_the_api(
    settings: Settings, tmp_path: Path, example_upstream: Upstream
) -> None:
    async with stub(delay_s=1.5) as slow:
        config = {
            "slow": table(slow, ["venue"], max_concurrency=2, timeout_s=10),
            "ivvy": table(example_upstream, ["contact", "event"]),
        }
        async with gateway_server(settings, tmp_path, config) as server, server.client() as api:
            stuck = [
                await api.run([{"namespace": "venue", "action": "getVenue", "params": {"id": n}}])
                for n in range(4)
            ]
            await slow.until_in_flight(2)  # the slow upstream is saturated, with two more calls queued
            began = time.monotonic()
            ping = await api.call("test", "ping")
            other = await run_jobs(server, [("contact", "getContact", {})])
            prompt = time.monotonic() - began
            slow_progress = [await api.progress(async_id) for async_id in stuck]
            for async_id in stuck:
                await api.wait(async_id, poll_s=0.05, timeout_s=20)
    assert "ack" in ping
    assert other == [{"errorCode": 400, "message": "'id' is required", "specificCode": 23017}]
    assert prompt < 1.0
    assert slow_progress == [0, 0, 0, 0]
    assert slow.max_in_flight == 2


# -- configuration --------------------------------------------------------------------------------


VALID = "[upstreams.a]\nbase_url = 'http://x'\nnamespaces = ['e']\nkey = 'k'\nsecret = 's'\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (VALID.replace("secret = 's'\n", ""), "exactly one of 'secret' and 'secret_env'"),
        (VALID.replace("key = 'k'\n", ""), "exactly one of 'key' and 'key_env'"),
        (VALID.replace("key = 'k'", "key = ''"), "upstreams.a.key is empty"),
        (VALID + "timout_s = 1\n", "upstreams.a: Object contains unknown field `timout_s`"),
        (VALID + "timeout_s = '5'\n", "upstreams.a.timeout_s: Expected `float`, got `str`"),
        (VALID + "max_concurrency = 0\n", "upstreams.a.max_concurrency: Expected `int` >= 1"),
        (VALID + "retry_delays_s = [1, -2]\n", "upstreams.a.retry_delays_s[1]: Expected `float` >= 0.0"),
        (VALID.replace("http://x", "x.com"), "base_url must be an absolute http or https URL"),
        (VALID.replace("'e'", "'batch'"), "the 'batch' namespace is batchgate's own"),
        (VALID.replace("'e'", "'test'"), "the 'test' namespace is batchgate's own"),
        (VALID + VALID.replace(".a]", ".b]"), "namespace 'e' is in both upstreams.a and upstreams.b"),
        ("[upstream.a]\n", "unknown setting 'upstream'"),
        ("[upstreams.a\n", "not valid TOML"),
    ],
)
def test_a_bad_config_is_refused_naming_the_place(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "batchgate.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert error in str(caught.value)


def test_the_key_and_secret_can_come_from_the_environment(tmp_path: Path) -> None:
    names = {"key_env": "UPSTREAM_KEY", "secret_env": "UPSTREAM_SECRET"}
    path = write_config(
        tmp_path / "batchgate.toml", {"a": {"base_url": "http://x", "namespaces": ["e"], **names}}
    )
    environ = {"UPSTREAM_KEY": "key-from-env", "UPSTREAM_SECRET": "secret-from-env"}
    [upstream] = load_config(path, environ=environ).upstreams
    assert (upstream.key, upstream.secret) == ("key-from-env", "secret-from-env")
    assert "secret-from-env" not in repr(upstream)  # kept out of logs
    with pytest.raises(
        ConfigError, match=r"upstreams\.a\.secret_env: the variable UPSTREAM_SECRET is not set"
    ):
        load_config(path, environ={"UPSTREAM_KEY": "k"})


def test_serve_refuses_a_bad_config_before_it_starts(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "batchgate.toml"
    path.write_text("[upstreams.a]\nbase_url = 'http://x'\n")
    failed = batchgate("serve", "--db", sqlite_url, "--config", str(path), check=False)
    assert failed.returncode == 2
    assert "upstreams.a: Object missing required field `namespaces`" in failed.stderr


def test_serve_refuses_a_namespace_both_registered_and_forwarded(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path / "batchgate.toml", {"a": table(Stub(url="http://x"), ["event"])})
    app = ["--app", "examples.ivvy_events.app:app", "--app-dir", str(ROOT)]
    failed = batchgate("serve", "--db", sqlite_url, "--config", str(path), *app, check=False)
    assert failed.returncode == 2
    assert "namespace event" in failed.stderr
