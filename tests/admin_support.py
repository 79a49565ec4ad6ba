"""Real parts for the admin listener's tests: the API and the admin listener served together, as
`batchgate serve --admin-port` serves them; an HTTP client that keeps the console's cookies; batches
in the states a console shows."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson
import uvicorn

from batchgate.admin.app import create_admin_app
from batchgate.client import AsyncClient
from batchgate.models import ApiKey, BatchStatus
from batchgate.server import create_app
from batchgate.server.app import Listeners
from batchgate.server.connections import uvicorn_config
from batchgate.service import Service
from batchgate.settings import Settings

from support import eventually

TOKEN = "admin-token-for-tests"


def listening() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0))


@dataclass
class AdminServer:
    """The public API and the admin listener of one process, on two loopback ports."""

    api_url: str
    url: str
    service: Service
    key: ApiKey
    other_key: ApiKey
    token: str | None

    def client(self, key: ApiKey | None = None) -> AsyncClient:
        key = key or self.key
        return AsyncClient(self.api_url, key.key, key.secret)

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self.service.store.find_batch(batch_id)
        assert batch is not None
        return batch.status


@contextlib.asynccontextmanager
async def admin_server(settings: Settings, *, token: str | None = TOKEN) -> AsyncIterator[AdminServer]:
    """Serves the API and the admin listener with uvicorn inside the test's event loop."""
    settings = dataclasses.replace(settings, callback_breaker_threshold=1000, admin_token=token or "")
    api = create_app(settings)
    api_socket, admin_socket = listening(), listening()
    admin_port = admin_socket.getsockname()[1]
    admin = create_admin_app(api.service.admin, token=token)
    listeners = Listeners(api.service, api=api, admin=admin, admin_port=admin_port)
    config = uvicorn_config(listeners, settings, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[api_socket, admin_socket]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    service = api.service
    key = await service.store.create_key("acme")
    other = await service.store.create_key("globex")
    try:
        yield AdminServer(
            f"http://127.0.0.1:{api_socket.getsockname()[1]}",
            f"http://127.0.0.1:{admin_port}",
            service,
            key,
            other,
            token,
        )
    finally:
        server.should_exit = True
        await task


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: list[str]  # the Set-Cookie headers, as sent

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Http:
    """Requests to the admin listener, keeping its cookies by hand (they are Secure, and this is
    plain http on loopback, as a browser allows) and never following redirects."""

    base: str
    bearer: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if self.bearer is not None:
            sent.setdefault("Authorization", f"Bearer {self.bearer}")
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data: Any = None
        if form is not None:
            data = aiohttp.FormData(form)
        elif json is not None:
            data, sent["Content-Type"] = orjson.dumps(json), "application/json"
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            session.request(method, self.base + path, data=data, headers=sent, allow_redirects=False) as r,
        ):
            body = await r.read()
            set_cookies = r.headers.getall("set-cookie", [])
            self._keep(set_cookies)
            return Answer(r.status, r.headers, body, set_cookies)

    def _keep(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def get(self, path: str, **options: Any) -> Answer:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> Answer:
        return await self.request("POST", path, **options)

    async def login(self, token: str, name: str = "") -> Answer:
        return await self.post("/login", form={"token": token, "name": name, "next": "/batches"})

    async def csrf(self) -> str:
        """The session's CSRF token, as the console's pages carry it."""
        answer = await self.get("/admin/api/session")
        assert answer.status == 200, answer.text
        token: str = answer.json["csrfToken"]
        return token

    async def act(self, path: str, **fields: str) -> Answer:
        """A console change, confirmed, with the session's CSRF token."""
        return await self.post(path, form={"csrf": await self.csrf(), "confirmed": "yes", **fields})


def jobs(count: int, action: str = "echo", **params: Any) -> list[dict[str, Any]]:
    return [{"namespace": "test", "action": action, "params": {"n": n, **params}} for n in range(count)]


def sleeps(count: int, seconds: float) -> list[dict[str, Any]]:
    return [{"namespace": "test", "action": "sleep", "params": {"seconds": seconds}}] * count


def failing_jobs(ok: int, failed: int) -> list[dict[str, Any]]:
    """`ok` jobs that succeed and `failed` that fail (a sleep refuses a string)."""
    return jobs(ok) + [{"namespace": "test", "action": "sleep", "params": {"seconds": "x"}}] * failed


async def finished(server: AdminServer, batch_id: str, timeout_s: float = 20) -> None:
    async def status() -> BatchStatus:
        return await server.status(batch_id)

    await eventually(status, until=lambda s: s.finished, timeout_s=timeout_s)
