"""The one callback receiver for every system: records each callback's arrival and body.

It answers 200 at once and checks nothing while the run goes on; the gate (gate.py) reads the
records afterwards. Arrival times are `time.perf_counter()` of this process, the same clock as
the load generator's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Arrival:
    async_id: str | None  # None when the body is not JSON with an asyncId
    at: float  # perf_counter
    body: bytes
    webhook_id: str | None = None


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._seen: set[str] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listens on `port` (any free one for 0, or when `port` is taken); returns the callback URL."""
        try:
            return await self._listen(host, port)
        except OSError:
            if port == 0:
                raise
            return await self._listen(host, 0)

    async def _listen(self, host: str, port: int) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/cb", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}/cb"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.perf_counter()
        try:
            async_id = orjson.loads(body).get("asyncId")
        except (orjson.JSONDecodeError, AttributeError):
            async_id = None
        self.arrivals.append(Arrival(async_id, at, body, request.headers.get("webhook-id")))
        if isinstance(async_id, str):
            self._seen.add(async_id)
        self._changed.set()
        return web.Response(text="ok")

    def mark(self) -> int:
        """A position in the records: `since(mark)` is what arrived after it."""
        return len(self.arrivals)

    def since(self, mark: int) -> list[Arrival]:
        return self.arrivals[mark:]

    def first_arrival(self, async_id: str, mark: int = 0) -> float | None:
        for arrival in self.arrivals[mark:]:
            if arrival.async_id == async_id:
                return arrival.at
        return None

    async def wait_for(self, ids: set[str], timeout_s: float) -> bool:
        """True once a callback of every id has arrived; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while not ids <= self._seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True
