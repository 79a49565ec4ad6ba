"""Real parts for tests: a batchgate server on a loopback port, a callback receiver, signed calls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvicorn
from aiohttp import web

from batchgate.actions import App
from batchgate.client import AsyncClient
from batchgate.models import ApiKey, Batch, JobSpec
from batchgate.server import create_app
from batchgate.server.connections import uvicorn_config
from batchgate.service import Service
from batchgate.settings import Settings
from batchgate.store import Store


async def submit(
    store: Store, api_key: ApiKey, jobs: Sequence[JobSpec], callback_url: str | None, **options: Any
) -> Batch:
    """Submits a batch straight to a store and returns it, as the store keeps it."""
    submitted = await store.submit(api_key, jobs, callback_url, **options)
    assert submitted.batch_id is not None
    batch = await store.get_batch(api_key.account, submitted.batch_id)
    assert batch is not None
    return batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A batchgate app served by uvicorn on 127.0.0.1 inside the test's event loop."""

    url: str
    service: Service
    key: ApiKey
    other_key: ApiKey

    def client(self, key: ApiKey | None = None) -> AsyncClient:
        key = key or self.key
        return AsyncClient(self.url, key.key, key.secret)


@contextlib.asynccontextmanager
async def live_server(
    settings: Settings, actions: App | None = None, *, run_worker: bool = True
) -> AsyncIterator[LiveServer]:
    app = create_app(settings, actions, run_worker=run_worker)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    service: Service = app.service
    key = await service.store.create_key("acme")
    other = await service.store.create_key("globex")
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", service, key, other)
    finally:
        server.should_exit = True
        await task


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A callback receiver on a loopback port: records every POST and answers with planned statuses."""

    url: str = ""
    calls: list[Received] = field(default_factory=list)
    plan: dict[str, list[int | tuple[int, dict[str, str]]]] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path in self.delay_s:
            await asyncio.sleep(self.delay_s[request.path])
        planned = self.plan.get(request.path)
        answer = planned.pop(0) if planned else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        async with self._arrived:
            self.calls.append(Received(request.path, dict(request.headers), body, status, time.monotonic()))
            self._arrived.notify_all()
        return web.Response(status=status, headers=headers)

    def received(self, path: str) -> list[Received]:
        return [call for call in self.calls if call.path == path]

    async def wait_for(self, path: str, count: int, timeout_s: float = 20) -> list[Received]:
        """Waits until `count` callbacks reached `path`, failing the test after `timeout_s`."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received(path)) >= count), timeout_s
            )
        return self.received(path)


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}"
    try:
        yield recv
    finally:
        await runner.cleanup()


async def raw_post(
    url: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, Any]:
    """An arbitrary request, for the negative cases a well-behaved client never sends."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, data=body, headers=headers or {}) as response,
    ):
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw else None)


async def eventually(
    read: Callable[[], Any], *, until: Callable[[Any], bool] = bool, timeout_s: float = 20.0
) -> Any:
    """Reads (sync or async) until `until(value)` holds: for state in another process, which has no event."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if asyncio.iscoroutine(value):
            value = await value
        if until(value):
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s (last {value!r})"
        await asyncio.sleep(0.02)
