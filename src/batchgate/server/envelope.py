"""Turning an ASGI request into an authenticated call: the signature first, from the headers alone,
then the body (bounded in size, in rate and in what the process holds at once), then JSON.

Nothing of the body is read for a request whose key is unknown or whose signature does not
verify: the signature covers the body through Content-MD5, which the body is held to once read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from batchgate.models import ApiKey
from batchgate.protocol.errors import (
    SERVER_BUSY,
    BadRequest,
    KeyRevoked,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from batchgate.protocol.nesting import MAX_DEPTH, may_nest_deeper_than, nested_deeper_than
from batchgate.protocol.signing import (
    AUTH_HEADER,
    MAX_CLOCK_SKEW,
    SignedRequest,
    parse_authorization,
    verify_headers,
)
from batchgate.server.keys import KeyCache

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Headers whose value decides how a request is authenticated: given twice, which one counts would be
# a guess, and a proxy and batchgate might guess differently.
SINGLE_HEADERS = frozenset(
    {AUTH_HEADER, "content-md5", "content-type", "ivvy-date", "date", "idempotency-key", "content-length"}
)
BODY_GRACE_S = 2.0  # a body may start slowly; after this it must keep up the minimum rate


@dataclass(frozen=True, slots=True)
class Request:
    """What the envelope reads of an HTTP request (header names in lower case)."""

    method: str
    path: str
    uri: str  # the path and query exactly as sent, which is what the client signed
    query: dict[str, str]
    headers: dict[str, str]
    repeated: frozenset[str] = frozenset()  # the SINGLE_HEADERS sent more than once

    @classmethod
    def of(cls, scope: Scope) -> Request:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        headers: dict[str, str] = {}
        repeated = set()
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in headers and name in SINGLE_HEADERS:
                repeated.add(name)
            headers[name] = raw_value.decode("latin-1")
        return cls(
            method=scope["method"],
            path=scope["path"],
            uri=(raw_path + b"?" + query if query else raw_path).decode("latin-1"),
            query=dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)),
            headers=headers,
            repeated=frozenset(repeated),
        )

    @property
    def signed(self) -> SignedRequest:
        return SignedRequest(method=self.method, uri=self.uri, headers=self.headers)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A request whose signature verified: its key, its signature, and when it was signed."""

    api_key: ApiKey
    signature: str
    signed_at: datetime

    @property
    def replayable_until(self) -> float:
        """When the signed date leaves the window: until then the request would be accepted again."""
        return (self.signed_at + MAX_CLOCK_SKEW).timestamp() + 1.0


async def authenticate(request: Request, keys: KeyCache) -> Authenticated:
    """The signature and the date, checked before any of the body is read."""
    if request.repeated:
        raise Unauthorized(f"The {sorted(request.repeated)[0]} header is given more than once")
    key, offered = parse_authorization(request.headers.get(AUTH_HEADER))
    api_key = await keys.get(key)
    if api_key is None:
        raise Unauthorized("Unknown API key")
    signed_at = verify_headers(request.signed, secret=api_key.secret, offered=offered)
    if api_key.revoked_at is not None:  # said only to a request signed with the key's own secret
        raise KeyRevoked()
    return Authenticated(api_key, offered, signed_at)


class BodyBudget:
    """Bounds the bytes of request bodies the whole process holds at once: a flood of large or
    stalled uploads is turned away (429) instead of growing the process."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    @contextlib.contextmanager
    def hold(self) -> Any:
        """A reservation that `take` adds to; what it took is given back on leaving."""
        taken = [0]

        def take(size: int) -> None:
            if self.held + size > self.max_bytes:
                raise TooManyRequests(
                    "The server is receiving as many request bodies as it can: try again shortly",
                    specific_code=SERVER_BUSY,
                    retry_after_s=1,
                )
            self.held += size
            taken[0] += size

        try:
            yield take
        finally:
            self.held -= taken[0]


@contextlib.asynccontextmanager
async def read_body(
    request: Request, receive: Receive, *, limit: int, min_rate: int, budget: BodyBudget
) -> AsyncIterator[bytes]:
    """The whole body, held against the process's budget while the call uses it. Refused with 413 as
    soon as it is known to exceed `limit` bytes, and cut off (400, and the connection closed) when
    it arrives slower than `min_rate` bytes per second once past a short grace."""
    declared = request.headers.get("content-length", "")
    expected = int(declared) if declared.isdigit() else None
    if expected is not None and expected > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    with budget.hold() as take:
        if expected:
            take(expected)  # reserved up front: a stalled upload cannot hold more than it claims
        chunks, size, more, started = [], 0, expected != 0, time.monotonic()
        while more:
            message = await _receive_in_time(receive, started, size, min_rate)
            if message["type"] == "http.disconnect":
                raise BadRequest("The client went away before sending the whole body")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
            if expected is None or size > expected:
                take(len(chunk))
            chunks.append(chunk)
            more = message.get("more_body", False)
        yield b"".join(chunks)


async def _receive_in_time(receive: Receive, started: float, size: int, min_rate: int) -> Message:
    """The next piece of the body, within the time the minimum rate leaves for it."""
    if not min_rate:
        return await receive()
    deadline = started + BODY_GRACE_S + (size + 1) / min_rate
    try:
        return await asyncio.wait_for(receive(), max(0.05, deadline - time.monotonic()))
    except TimeoutError:
        raise SlowBody(f"The request body arrived slower than {min_rate} bytes per second") from None


class SlowBody(BadRequest):
    """The request body arrived too slowly: the connection is closed after the answer."""


def parse_params(body: bytes) -> Any:
    """The call's parameters: an empty body means none."""
    if not body.strip():
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The request body is not valid JSON", additional_messages=[str(exc)]) from exc
    if may_nest_deeper_than(body) and nested_deeper_than(params):
        raise BadRequest(f"The request body nests arrays and objects deeper than {MAX_DEPTH} levels")
    return params


async def respond(
    send: Send, status: int, body: bytes, *, retry_after_s: float | None = None, close: bool = False
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after_s))).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
