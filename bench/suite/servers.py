"""Raw ASGI apps run under uvicorn (httptools, uvloop) in their own processes.

`hello`: the machine-limit server: GET answers a 5-byte body, POST reads the body and answers
`{"n": <bytes read>}`. `stub`: the upstream every http job calls: it answers
`{"echo": <the params>, "at": <Unix seconds>}` for any POST.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] == "GET":
        await _answer(send, b"hello", [(b"content-type", b"text/plain")])
        return
    body = await _read_body(receive)
    await _answer(send, orjson.dumps({"n": len(body)}), JSON_HEADERS)


async def stub(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _read_body(receive)
    params = orjson.loads(body) if body else {}
    await _answer(send, orjson.dumps({"echo": params, "at": time.time()}), JSON_HEADERS)
