"""The benchmark's actions for batchgate: `batchgate serve --app bench.suite.actions:app`.

`bench.noop` and `bench.io10` are Python actions. `stub.echo` (the http kind) is forwarded to the
upstream stub named by BENCH_STUB_URL: by batchgate's own gateway mode (`--config`) when the
installed batchgate has it, serving `core` (no `stub` namespace here); otherwise by the Python
action below, a POST on one shared aiohttp session (at most 50 connections, the in-flight limit).
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
from bench.suite import jobs

from batchgate.actions import App

MAX_IN_FLIGHT = 50


def _core() -> App:
    app = App()

    @app.action("bench", "noop")
    async def noop(**params: Any) -> dict[str, Any]:
        return jobs.noop(params)

    @app.action("bench", "io10")
    async def io10(**params: Any) -> dict[str, Any]:
        return await jobs.io10(params)

    return app


class StubForwarder:
    """`stub.echo` as a Python action: POST the params to the stub, answer its JSON."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/") + jobs.STUB_PATH
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT),
            timeout=aiohttp.ClientTimeout(total=30),
            trust_env=False,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def echo(self, **params: Any) -> Any:
        assert self.session is not None, "the app was not started"
        async with self.session.post(
            self.url, data=orjson.dumps(params), headers={"Content-Type": "application/json"}
        ) as response:
            return orjson.loads(await response.read())


core = _core()
app = _core()
_forwarder = StubForwarder(os.environ.get("BENCH_STUB_URL", "http://127.0.0.1:9"))
app.add("stub", "echo", _forwarder.echo)
app.on_startup.append(_forwarder.open)
app.on_shutdown.append(_forwarder.close)
