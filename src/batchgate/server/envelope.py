"""Turning an HTTP request into an authenticated call: size limit, signature, then JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from batchgate.models import ApiKey
from batchgate.protocol.errors import BadRequest, PayloadTooLarge, Unauthorized, WireError
from batchgate.protocol.signing import AUTH_HEADER, SignedRequest, parse_authorization, verify
from batchgate.server.keys import KeyCache

KEY_REVOKED = 463


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_uri(request: Request) -> str:
    """The path and query exactly as the client sent (and signed) them."""
    path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


async def authenticate(request: Request, body: bytes, keys: KeyCache) -> ApiKey:
    key, offered = parse_authorization(request.headers.get(AUTH_HEADER))
    api_key = await keys.get(key)
    if api_key is None:
        raise Unauthorized("Unknown API key")
    if api_key.revoked_at is not None:
        raise WireError("Key revoked", error_code=KEY_REVOKED)
    signed = SignedRequest(
        method=request.method, uri=request_uri(request), headers=request.headers, body=body
    )
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
