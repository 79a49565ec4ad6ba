"""Real HTTP on 127.0.0.1: the guarded connector refuses before anything reaches the server.

Names are resolved by fake inner resolvers (no DNS needed); the default resolver is only used
for numeric hosts, which getaddrinfo answers without the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from aiohttp.test_utils import TestServer as HTTPTestServer

from batchgate.netguard import AddressPolicy, guarded_connector

from resolvers import FakeResolver, refused


class Hook:
    """A callback receiver on 127.0.0.1 that records the Host header of every request."""

    def __init__(self, server: BaseTestServer, hosts: list[str]) -> None:
        self.server = server
        self.hosts = hosts

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/hook"


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    hosts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        hosts.append(request.headers["Host"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    async with HTTPTestServer(app, host="127.0.0.1") as server:
        yield Hook(server, hosts)


async def post(connector: aiohttp.TCPConnector, url: str) -> int:
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, json={"ok": True}, allow_redirects=False) as response,
    ):
        return response.status


async def test_hostname_resolving_to_loopback_never_reaches_server(hook: Hook) -> None:
    connector = guarded_connector(AddressPolicy(), inner=FakeResolver(["127.0.0.1"]))
    with refused("127.0.0.1 is a loopback address"):
        await post(connector, hook.url("callback.example"))
    assert hook.hosts == []


async def test_allow_listed_loopback_is_reached_with_hostname_in_host_header(hook: Hook) -> None:
    connector = guarded_connector(AddressPolicy.from_spec("127.0.0.1"), inner=FakeResolver(["127.0.0.1"]))
    assert await post(connector, hook.url("callback.example")) == 200
    assert hook.hosts == [f"callback.example:{hook.port}"]


async def test_allow_listed_hostname_is_reached_whatever_it_resolves_to(hook: Hook) -> None:
    connector = guarded_connector(
        AddressPolicy.from_spec("callback.example"), inner=FakeResolver(["127.0.0.1"])
    )
    assert await post(connector, hook.url("callback.example")) == 200
    assert hook.hosts == [f"callback.example:{hook.port}"]


async def test_dns_rebinding_passes_submit_check_but_is_refused_at_connect(hook: Hook) -> None:
    policy = AddressPolicy()
    rebinding = FakeResolver(["93.184.216.34"], ["127.0.0.1"])
    url = hook.url("rebind.example")
    await policy.check_url_resolved(url, resolver=rebinding)  # first answer: public
    with refused("127.0.0.1 is a loopback address"):
        await post(guarded_connector(policy, inner=rebinding), url)  # second answer: loopback
    assert rebinding.calls == ["rebind.example", "rebind.example"]
    assert hook.hosts == []


async def test_non_canonical_numeric_host_is_refused_by_real_resolver(hook: Hook) -> None:
    # aiohttp hands "0x7f000001" to the resolver; getaddrinfo reads it as 127.0.0.1.
    with refused("127.0.0.1 is a loopback address"):
        await post(guarded_connector(AddressPolicy()), hook.url("0x7f000001"))
    assert hook.hosts == []


async def test_ip_literal_skips_resolver_so_check_url_must_guard_it(hook: Hook) -> None:
    resolver = FakeResolver(["93.184.216.34"])
    url = hook.url("127.0.0.1")
    with refused("loopback"):
        AddressPolicy().check_url(url)
    # Without check_url the literal is dialled directly: the documented reason callers must run it.
    assert await post(guarded_connector(AddressPolicy(), inner=resolver), url) == 200
    assert resolver.calls == []
    assert hook.hosts == [f"127.0.0.1:{hook.port}"]
