"""Turning an ASGI request into an authenticated call: size limit, signature, then JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from batchgate.models import ApiKey
from batchgate.protocol.errors import BadRequest, PayloadTooLarge, Unauthorized, WireError
from batchgate.protocol.signing import AUTH_HEADER, SignedRequest, parse_authorization, verify
from batchgate.server.keys import KeyCache

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY_REVOKED = 463


@dataclass(frozen=True, slots=True)
class Request:
    """What the envelope reads of an HTTP request (header names in lower case)."""

    method: str
    path: str
    uri: str  # the path and query exactly as sent, which is what the client signed
    query: dict[str, str]
    headers: dict[str, str]

    @classmethod
    def of(cls, scope: Scope) -> Request:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        return cls(
            method=scope["method"],
            path=scope["path"],
            uri=(raw_path + b"?" + query if query else raw_path).decode("latin-1"),
            query=dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)),
            headers={name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]},
        )


async def read_body(request: Request, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("The client went away before sending the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def authenticate(request: Request, body: bytes, keys: KeyCache) -> ApiKey:
    key, offered = parse_authorization(request.headers.get(AUTH_HEADER))
    api_key = await keys.get(key)
    if api_key is None:
        raise Unauthorized("Unknown API key")
    if api_key.revoked_at is not None:
        raise WireError("Key revoked", error_code=KEY_REVOKED)
    signed = SignedRequest(method=request.method, uri=request.uri, headers=request.headers, body=body)
    verify(signed, secret=api_key.secret, offered=offered)
    return api_key


def parse_params(body: bytes) -> Any:
    """The call's parameters: an empty body means none."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The request body is not valid JSON", additional_messages=[str(exc)]) from exc


async def respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
