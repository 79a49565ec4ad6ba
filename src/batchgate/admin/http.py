"""The admin listener's HTTP primitives: a request read once (headers, cookies, a small body), the
responses it answers with, and the errors that become them. No framework: the admin listener is a
plain ASGI callable, as the public API is."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

import orjson

from batchgate.protocol.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, WireError
from batchgate.server.envelope import Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024  # a form or a JSON action: names, numbers and ids only
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Request:
    """What the admin listener reads of a request; header names in lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    port: int | None
    body: bytes = b""

    @classmethod
    async def read(cls, scope: Scope, receive: Receive) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if _has_nul(scope["path"], *query, *query.values()):
            raise BadRequest("the path and the query may not hold a NUL character")
        server = scope.get("server") or (None, None)
        body = await _body(receive) if scope["method"] in ("POST", "PUT", "DELETE", "PATCH") else b""
        return cls(scope["method"], scope["path"], query, headers, _cookies(headers), server[1], body)

    @property
    def mutating(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def form(self) -> dict[str, str]:
        """The body's fields, as a browser posts a form (or a JSON object's string values)."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return {k: str(v) for k, v in self.json().items() if isinstance(v, str | int | float | bool)}
        fields = dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
        if _has_nul(*fields, *fields.values()):
            raise BadRequest(NUL_IN_BODY)
        return fields

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is an empty object."""
        if not self.body.strip():
            return {}
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest("the body must be a JSON object")
        if b"\\u0000" in self.body:  # a NUL as JSON writes it (or text spelling one: names and ids do not)
            raise BadRequest(NUL_IN_BODY)
        return value


# Names and ids hold no NUL character, and PostgreSQL's text cannot: one is refused as it comes in.
NUL_IN_BODY = "the body may not hold a NUL character"


def _has_nul(*texts: str) -> bool:
    return any("\x00" in text for text in texts)


async def _body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client left before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the admin listener takes bodies of up to {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def set_cookie(self, cookie: bytes) -> Response:
        self.headers.append((b"set-cookie", cookie))
        return self

    async def send(self, send: Send, *, head: bool = False) -> None:
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        if not any(name == b"cache-control" for name, _ in self.headers):
            headers.append((b"cache-control", b"no-store"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else self.body})


def html(body: str, status: int = 200) -> Response:
    return Response(
        status,
        body.encode(),
        b"text/html; charset=utf-8",
        [(b"content-security-policy", PAGE_POLICY)],
    )


def json(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value), b"application/json")


def redirect(location: str) -> Response:
    """See other: after a form's POST, the browser GETs the page it should show."""
    return Response(303, b"", headers=[(b"location", location.encode("latin-1", "replace"))])


def error_json(exc: WireError) -> Response:
    """An error of the admin API: `{"errorCode", "message"}` as the public API words its own."""
    response = Response(exc.error_code, exc.to_json(), b"application/json")
    if exc.error_code == 401:
        response.headers.append((b"www-authenticate", b'Bearer realm="batchgate admin"'))
    return response


Handler = Callable[..., Awaitable[Response]]  # (request, caller, **path parameters)
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, template: str, handler: Handler) -> Route:
    """A route; `{name}` in the template matches one path segment, passed to the handler by name."""
    pattern = _PARAM.sub(lambda found: f"(?P<{found.group(1)}>[^/]+)", template)
    return Route(method, re.compile(pattern), handler)


def match(routes: list[Route], method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler for a request and its path parameters; NotFound or MethodNotAllowed otherwise."""
    allowed = False
    for candidate in routes:
        found = candidate.pattern.fullmatch(path)
        if found is None:
            continue
        if candidate.method == method or (method == "HEAD" and candidate.method == "GET"):
            return candidate.handler, found.groupdict()
        allowed = True
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}")
    raise NotFound(f"there is nothing at {path}")
