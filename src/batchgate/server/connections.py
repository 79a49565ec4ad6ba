"""The connection layer's guard: what uvicorn's HTTP protocol lacks for a server on the internet.

uvicorn (httptools) closes a keep-alive connection idle after a response, and stops reading a body
the application has not asked for past 64 KiB. It has no deadline for a request's headers, so a
client that connects and says nothing, or sends its headers a byte a second (slowloris), holds a
connection forever; it bounds neither the size of the headers nor the number of connections; and
after answering a request whose body it never read, it reads that body to the end, however slowly
it comes. `guarded_protocol` adds these, as a subclass of its HTTP protocol:

- a deadline for each request's headers, from the moment the connection opens (or the request's
  first byte arrives on a kept-alive one): past it the connection is closed;
- a bound on the bytes of a request's headers: past it, 431 and the connection closed;
- a cap on open connections: past it, a new one is answered 429 and closed at once;
- a connection whose body was left unread is closed after the answer.

The rate a body must arrive at, and the memory bodies hold, are the application's (envelope.py).
It relies on uvicorn's HttpToolsProtocol methods (connection_made, data_received,
on_message_begin, on_headers_complete, on_response_complete), unchanged from 0.20 to 0.55:
the tests in tests/acceptance/test_front_door.py hold it to what it promises.
"""

from __future__ import annotations

import asyncio
import http
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from batchgate.protocol.errors import SERVER_BUSY, BadRequest, TooManyRequests, WireError
from batchgate.settings import Settings

LINGER_S = 2.0  # how long a refused connection's late bytes are read and dropped
SWEEP_S = 0.5  # how often headers that are late are looked for


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000


class HeadersTooLarge(WireError):
    """The request's headers are too large."""

    error_code = 431


def _raw_response(error: WireError, *, retry_after_s: int | None = None) -> bytes:
    body = error.to_json()
    head = [
        f"HTTP/1.1 {error.error_code} {http.HTTPStatus(error.error_code).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *([f"retry-after: {retry_after_s}"] if retry_after_s else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_MANY_CONNECTIONS = _raw_response(
    TooManyRequests(
        "The server has as many connections as it takes: try again shortly",
        specific_code=SERVER_BUSY,
        retry_after_s=1,
    ),
    retry_after_s=1,
)
HEADERS_TOO_LARGE = _raw_response(HeadersTooLarge())
NOT_HTTP = _raw_response(BadRequest("The request is not valid HTTP/1.1"))


async def _headers_too_large(scope: Any, receive: Any, send: Any) -> None:
    """The answer to a request whose headers came whole but too large: 431, and the connection closed."""
    body = HeadersTooLarge().to_json()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _sweeping: ClassVar[dict[int, asyncio.TimerHandle]] = {}  # per event loop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers_since: float | None = None  # the clock the headers run against; None once they are in
        self.header_bytes = 0
        self.lingering = False  # refused: what still comes in is dropped until the connection closes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._start_headers_clock()
        self._sweep_soon()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        super().data_received(data)
        if self.headers_since is None or self.transport.is_closing():
            return
        # The headers are not complete yet, so all of this chunk was headers.
        self.header_bytes += len(data)
        if self.header_bytes > self.limits.max_header_bytes:
            self._refuse(HEADERS_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        """What the HTTP parser refuses is answered with the wire's error body too."""
        self._refuse(NOT_HTTP)

    def _refuse(self, answer: bytes) -> None:
        """Answers a request that is still coming in, and closes so that the client reads the
        answer: closing with its bytes unread would reset the connection, and a reset can arrive
        before the answer is read. So the write side is shut after the answer, and what still
        comes in is dropped for LINGER_S at most (a lingering close, as web servers do)."""
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.lingering = True
        self.loop.call_later(LINGER_S, self.transport.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.headers_since is None:  # the next request on a kept-alive connection
            self._start_headers_clock()

    def on_headers_complete(self) -> None:
        self.headers_since = None
        # All of the headers may have come in one read: count what the parser gathered.
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size <= self.limits.max_header_bytes:
            super().on_headers_complete()
            return
        app, self.app = self.app, _headers_too_large  # this request only: uvicorn takes the app now
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.transport.close()  # answered without its body: reading the rest would serve a slow client

    def _start_headers_clock(self) -> None:
        self.headers_since, self.header_bytes = time.monotonic(), 0

    def _sweep_soon(self) -> None:
        loop = self.loop
        if id(loop) not in self._sweeping:
            self._sweeping[id(loop)] = loop.call_later(SWEEP_S, self._sweep, loop, self.connections)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Closes the connections whose headers are late; runs while there are connections."""
        deadline = time.monotonic() - cls.limits.header_timeout_s
        for connection in list(connections):
            since = getattr(connection, "headers_since", None)
            if since is not None and since < deadline and not connection.transport.is_closing():
                connection.transport.close()
        if connections:
            cls._sweeping[id(loop)] = loop.call_later(SWEEP_S, cls._sweep, loop, connections)
        else:
            del cls._sweeping[id(loop)]


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The guarded protocol class with these limits, for uvicorn's `http=`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "_sweeping": {}})


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """How batchgate is served: uvicorn with uvloop, the guarded protocol, and idle connections closed."""
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(settings.idle_timeout_s)),
        log_level=log_level,
        log_config=None,  # uvicorn's lines go through batchgate's logging (batchgate.logs), in its format
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address: skip a middleware on every call
        lifespan="on",
        timeout_graceful_shutdown=15,
    )
