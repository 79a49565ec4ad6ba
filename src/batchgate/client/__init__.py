"""A Python client of the wire protocol: an async core (`AsyncClient`) and a thin sync `Client`.

async with AsyncClient("http://127.0.0.1:8080", key, secret) as api:
    async_id = await api.run([{"namespace": "test", "action": "ping"}])
    results = await api.wait(async_id)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiohttp
import orjson

from batchgate.protocol.errors import BatchgateError
from batchgate.protocol.paths import call_uri
from batchgate.protocol.signing import sign_headers

KEEPALIVE_S = 4.0
P = ParamSpec("P")
T = TypeVar("T")


class ClientError(BatchgateError):
    """A call made with the client failed."""


class ApiError(ClientError):
    """The server answered with a wire error body."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body: dict[str, Any] = (
            body if isinstance(body, dict) else {"errorCode": status, "message": str(body)}
        )
        self.error_code = int(self.body.get("errorCode", status))
        specific = self.body.get("specificCode")
        self.specific_code = int(specific) if specific is not None else None
        super().__init__(f"{self.error_code}/{self.specific_code}: {self.body.get('message')}")


class Unreachable(ClientError):
    """The server could not be reached, or did not answer in time."""


def build_request(
    key: str, secret: str, namespace: str, action: str, params: Any
) -> tuple[str, bytes, dict[str, str]]:
    """(uri, body, headers) of one signed call; the body is empty when there are no params."""
    uri = call_uri(namespace, action)
    body = b"" if params is None else orjson.dumps(params)
    return uri, body, sign_headers(key=key, secret=secret, uri=uri, body=body)


class AsyncClient:
    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        *,
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    async def call(
        self, namespace: str, action: str, params: Any = None, *, idempotency_key: str | None = None
    ) -> Any:
        """One signed call; the decoded answer, or ApiError for an error body. Give the same
        `idempotency_key` when retrying a call, for a forwarded namespace's upstream to drop the
        repeat."""
        if self._session is None:
            # A pooled connection is dropped before the server's idle timeout (5 s by default)
            # would close it under a request being sent.
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        uri, body, headers = build_request(self.key, self.secret, namespace, action, params)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with self._session.post(self.url + uri, data=body, headers=headers) as response:
                raw = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(f"could not reach {self.url}: {str(exc) or type(exc).__name__}") from exc
        try:
            answer = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            answer = raw.decode(errors="replace")  # not batchgate answering: a proxy's page, say
        if response.status != 200:
            raise ApiError(response.status, answer)
        return answer

    async def run(
        self,
        jobs: Sequence[dict[str, Any]],
        *,
        callback_url: str | None = None,
        concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Submits a batch; its asyncId. `concurrency` runs up to that many jobs at once (those
        without dependencies); the same `idempotency_key` on a retry answers the first batch."""
        params: dict[str, Any] = {"jobs": list(jobs)}
        if callback_url:
            params["callbackUrl"] = callback_url
        if concurrency is not None:
            params["concurrency"] = concurrency
        answer = await self.call("batch", "run", params, idempotency_key=idempotency_key)
        return str(answer["asyncId"])

    async def progress(self, async_id: str) -> int:
        return int((await self.call("batch", "progress", {"async": async_id}))["progress"])

    async def results(self, async_id: str, *, partial: bool = False) -> dict[str, Any]:
        """The results of a finished batch; with `partial`, of any batch so far, each job with its status."""
        params: dict[str, Any] = {"async": async_id, **({"partial": True} if partial else {})}
        answer: dict[str, Any] = await self.call("batch", "results", params)
        return answer

    async def status(self, async_id: str) -> dict[str, Any]:
        """The batch's status, counts by outcome, times and callback state."""
        answer: dict[str, Any] = await self.call("batch", "status", {"async": async_id})
        return answer

    async def list_batches(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of this account's batches, newest first: {"batches": [...], "nextCursor"}."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        answer: dict[str, Any] = await self.call(
            "batch", "list", {name: value for name, value in params.items() if value is not None}
        )
        return answer

    async def cancel(self, async_id: str) -> bool:
        return bool((await self.call("batch", "cancel", {"async": async_id}))["cancelled"])

    async def repost(self, async_id: str) -> bool:
        return bool((await self.call("batch", "repost", {"async": async_id}))["reposted"])

    async def restart(self, async_id: str, *, failed_only: bool = False) -> bool:
        """Runs the batch again; with `failed_only`, only the jobs that failed or never ran."""
        params: dict[str, Any] = {"async": async_id, **({"failedOnly": True} if failed_only else {})}
        return bool((await self.call("batch", "restart", params))["restarted"])

    async def wait(
        self,
        async_id: str,
        *,
        poll_s: float = 0.25,
        timeout_s: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Polls progress until the batch completes, then returns its results."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (progress := await self.progress(async_id)) < 100:
            if on_progress:
                on_progress(progress)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {async_id} is at {progress}% after {timeout_s} s")
            await asyncio.sleep(poll_s)
        if on_progress:
            on_progress(100)
        return await self.results(async_id)


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """An AsyncClient method, run to its end on the sync client's own event loop."""

    def call(client: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return client._runner.run(method(client._client, *args, **kwargs))

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class Client:
    """The same calls, blocking: each runs `AsyncClient`'s coroutine on a private event loop."""

    def __init__(self, url: str, key: str, secret: str, *, timeout_s: float = 30.0) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(url, key, secret, timeout_s=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    call = _blocking(AsyncClient.call)
    run = _blocking(AsyncClient.run)
    progress = _blocking(AsyncClient.progress)
    results = _blocking(AsyncClient.results)
    status = _blocking(AsyncClient.status)
    list_batches = _blocking(AsyncClient.list_batches)
    cancel = _blocking(AsyncClient.cancel)
    repost = _blocking(AsyncClient.repost)
    restart = _blocking(AsyncClient.restart)
    wait = _blocking(AsyncClient.wait)


__all__ = ["ApiError", "AsyncClient", "Client", "ClientError", "Unreachable", "build_request"]
