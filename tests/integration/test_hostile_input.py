"""Hostile input against a real server, on SQLite and on PostgreSQL: whatever a client sends (headers,
path, query, body bytes, JSON of any shape and depth), the answer is a success or a 4xx wire error
body, never a 5xx, and the server logs no error and no traceback.

Each property test starts one server (uvicorn on a loopback port, in the test's event loop) and
drives hypothesis from a worker thread, which sends each example as raw bytes over a socket and
checks the answer: the thread blocks, the event loop serves. Requests are signed as the server reads
them (header values as latin-1, the last of a repeated header counting), so that mutated headers
and hostile bodies get past the signature to the checks behind it. Once the examples are done, the
test waits for every batch they submitted to finish (callbacks included) and then holds the whole
log, the worker's too, to having no error and no traceback.

What these tests once found is pinned by a small test each at the end of this file.

Callbacks: only 127.0.0.1 (the test's receiver, or a closed port) passes the address guard here;
every other callbackUrl a test sends is refused without a connection (a private address, or a name
under .invalid, which does not resolve). `safe_callback` holds the generated ones to that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import logging
import os
import socket
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from batchgate.client import ApiError
from batchgate.models import ApiKey
from batchgate.netguard import AddressPolicy, UnsafeAddress
from batchgate.protocol.errors import BATCH_NOT_FOUND, INCORRECT_JOB_FORMAT, REFERENCE_UNRESOLVED
from batchgate.protocol.nesting import MAX_DEPTH
from batchgate.protocol.signing import content_md5, ivvy_headers, signature, string_to_sign
from batchgate.protocol.timestamps import format_timestamp
from batchgate.settings import Settings

from support import LiveServer, Receiver, live_server, receiver

FAST_RETRIES = (0.05, 0.1, 0.2)
MAX_BODY = 1024 * 1024
SLEEP_CAP = 0.05  # test.sleep's cap here: a valid sleep is short, so the batches finish quickly
ORJSON_MAX_DEPTH = 254  # orjson.dumps refuses containers nested deeper than this (orjson.loads: 1024)
ERROR_FIELDS = {"errorCode", "message", "specificCode", "additionalMessages"}
ALLOWED_CALLBACKS = AddressPolicy.from_spec("127.0.0.1")  # as hostile_settings allows
# BATCHGATE_HOSTILE_FACTOR=20 runs 20 times the examples, for a longer hunt than CI's (with --timeout 0).
EXAMPLES_FACTOR = float(os.environ.get("BATCHGATE_HOSTILE_FACTOR", "1"))


# The wire: one request as bytes, its answer, and what every answer must be ---------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request as sent: the request-target and the header values are raw bytes."""

    target: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes = b""
    method: str = "POST"

    def __repr__(self) -> str:
        def cut(data: bytes, size: int) -> bytes:
            return data if len(data) <= size else data[:size] + b"...(%d bytes)" % len(data)

        headers = [(name, cut(value, 200)) for name, value in self.headers]
        body = cut(self.body, 300)
        return f"Call({self.method} {cut(self.target, 300)!r}, headers={headers!r}, body={body!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a failing example
        printer.text(repr(self))

    def header(self, name: str) -> bytes | None:
        """The value the server reads: the last one sent."""
        values = [value for n, value in self.headers if n.lower() == name.lower()]
        return values[-1] if values else None

    def without(self, *names: str) -> Call:
        drop = {name.lower() for name in names}
        return replace(self, headers=tuple((n, v) for n, v in self.headers if n.lower() not in drop))

    def plus(self, *headers: tuple[str, bytes]) -> Call:
        return replace(self, headers=(*self.headers, *headers))


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def exchange(port: int, request: bytes, method: str = "POST") -> Answer:
    """Sends raw bytes on a new connection (blocking: hypothesis's thread calls it) and reads the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # a server that answers early (413, 431) may close first
            sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.getheader("content-type", ""), response.read())


def send(port: int, call: Call) -> Answer:
    head = [
        call.method.encode() + b" " + call.target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Length: %d" % len(call.body),
        *(name.encode() + b": " + value for name, value in call.headers),
    ]
    return exchange(port, b"\r\n".join(head) + b"\r\n\r\n" + call.body, call.method)


def check_answer(call: Call, answer: Answer) -> Any:
    """A success or a 4xx wire error body, in JSON; returns the decoded body."""
    assert answer.status < 500, f"{answer.status} {answer.body[:500]!r}"
    if call.method == "HEAD":
        return None
    assert answer.content_type == "application/json", answer
    body = orjson.loads(answer.body)
    assert isinstance(body, dict), body
    if answer.status != 200:
        assert 400 <= answer.status < 500, answer
        assert set(body) <= ERROR_FIELDS, body
        assert body["errorCode"] == answer.status, body
        assert isinstance(body["message"], str) and body["message"], body
        if "specificCode" in body:
            assert type(body["specificCode"]) is int, body
        if "additionalMessages" in body:
            messages = body["additionalMessages"]
            assert isinstance(messages, list) and all(isinstance(m, str) for m in messages), body
    return body


def is_bad(record: logging.LogRecord) -> bool:
    """An error, or a traceback at any level."""
    return (
        record.levelno >= logging.ERROR
        or record.exc_info is not None
        or bool(record.exc_text)
        or "Traceback" in record.getMessage()
    )


def of_a_request(record: logging.LogRecord) -> bool:
    """Written while a request is answered (so before its answer), not later by the worker or a delivery."""
    if record.name.startswith(("batchgate.server", "batchgate.batches", "uvicorn")):
        return True
    return record.name == "batchgate.actions.registry" and record.getMessage().startswith("direct call")


def describe(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.name} {r.levelname}: {r.getMessage()} {r.exc_info!r}"[:2000] for r in records)


# Signing, as the server reads a request --------------------------------------------------------------


def now_ivvy() -> bytes:
    return format_timestamp(datetime.now(UTC)).encode()


def authorization(key: ApiKey, call: Call) -> bytes:
    """The X-Api-Authorization value that signs `call` with `key`, whatever its headers hold."""
    seen = {name.lower(): value.decode("latin-1") for name, value in call.headers}
    ivvy_date = seen.get("ivvy-date")
    text = string_to_sign(
        method=call.method,
        body_md5=seen.get("content-md5", "").strip().lower(),
        content_type=seen.get("content-type", ""),
        date="" if ivvy_date is not None else seen.get("date", ""),
        uri=call.target.decode("latin-1"),
        ivvy=ivvy_headers(seen),
    )
    return f"IWS {key.key}:{signature(key.secret, text)}".encode()


def authorize(key: ApiKey, call: Call) -> Call:
    """`call` signed: its X-Api-Authorization headers replaced by one that verifies."""
    call = call.without("X-Api-Authorization")
    return call.plus(("X-Api-Authorization", authorization(key, call)))


def unsigned(target: bytes | str, body: bytes = b"") -> Call:
    """A call with every header of a signed one but X-Api-Authorization."""
    raw = target.encode() if isinstance(target, str) else target
    headers = (
        ("Content-Type", b"application/json"),
        ("Content-MD5", content_md5(body).encode()),
        ("IVVY-Date", now_ivvy()),
    )
    return Call(raw, headers, body)


def signed(key: ApiKey, target: bytes | str, body: bytes = b"", *extra: tuple[str, bytes]) -> Call:
    """A correctly signed call; the `extra` headers are sent (and signed) too."""
    return authorize(key, unsigned(target, body).plus(*extra))


def uri(namespace: str, action: str) -> str:
    return f"/api/1.0/{quote(namespace, safe='')}?action={quote(action, safe='')}"


# The server under attack -----------------------------------------------------------------------------


@dataclass
class Target:
    """A live server, its callback receiver, and what its log says."""

    live: LiveServer
    receiver: Receiver
    caplog: pytest.LogCaptureFixture
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = int(self.live.url.rsplit(":", 1)[1])

    @property
    def key(self) -> ApiKey:
        return self.live.key

    def bad_records(self, since: int = 0) -> list[logging.LogRecord]:
        return [record for record in self.caplog.records[since:] if is_bad(record)]

    def send(self, call: Call) -> Any:
        """Sends one example, checks its answer and what answering it logged; the decoded body."""
        mark = len(self.caplog.records)
        answer = send(self.port, call)
        if currently_in_test_context():  # hypothesis prints it with a failing example
            note(f"answer: {answer.status} {answer.body[:300]!r}")
        body = check_answer(call, answer)
        bad = [record for record in self.bad_records(mark) if of_a_request(record)]
        assert not bad, describe(bad)
        return body

    async def asend(self, call: Call) -> Any:
        return await asyncio.to_thread(self.send, call)

    async def explore(
        self, strategy: st.SearchStrategy[Any], check: Callable[[Any], Any], examples: int
    ) -> None:
        """Runs `check` on `examples` examples of `strategy`, in a thread while this event loop serves."""

        @hypothesis_settings(
            max_examples=max(1, round(examples * EXAMPLES_FACTOR)),
            deadline=None,
            database=None,  # no .hypothesis/ in the checkout; a failure prints its example and blob
            print_blob=True,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
                HealthCheck.filter_too_much,
            ],
        )
        @given(strategy)
        def example(value: Any) -> None:
            check(value)

        await asyncio.to_thread(example)

    async def open_batches(self) -> int:
        store = self.live.service.store
        return sum([(await store.usage(key.account)).open_batches for key in (self.key, self.live.other_key)])

    async def settle(self, timeout_s: float = 20.0) -> None:
        """Waits for every batch to finish, then holds the whole log to having no error or traceback."""
        deadline = time.monotonic() + timeout_s
        while (still_open := await self.open_batches()) and time.monotonic() < deadline:
            if self.bad_records():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the last callbacks
        bad = self.bad_records()
        assert not bad, describe(bad)
        assert not still_open, f"{still_open} batches still open after {timeout_s} s"


def hostile_settings(db_url: str) -> Settings:
    return Settings(
        db=db_url,
        callback_allow="127.0.0.1",
        callback_retry_schedule=FAST_RETRIES,
        callback_timeout_s=2.0,
        lease_s=2.0,
        poll_s=0.2,
        rate_limit=0,  # each example is answered on its merits, not 429
        sleep_cap_s=SLEEP_CAP,
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture
async def target(db_url: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Target]:
    """A server on a fresh database whose log (batchgate's, asyncio's and uvicorn's) `caplog` records."""
    caplog.set_level(logging.WARNING)
    async with receiver() as recv, live_server(hostile_settings(db_url)) as live:
        uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's logging config does not propagate to the root
        uvicorn_log.addHandler(caplog.handler)
        try:
            yield Target(live, recv, caplog)
        finally:
            uvicorn_log.removeHandler(caplog.handler)


# Strategies: hostile values --------------------------------------------------------------------------


def mostly(
    usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """`usual`, but one time in `one_in` `odd`: enough well-formed input gets past the first check."""
    return rarely(one_in).flatmap(lambda odd_one: odd if odd_one else usual)


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about one time in `one_in`, and shrinking to False (hypothesis favours the simplest value,
    0, far more than 1 in n: testing for it would make the rare case a common one)."""
    return st.integers(0, 8 * one_in - 1).map(lambda n: n % one_in == one_in - 1)


SURROGATES = ["\ud800", "\udfff", "\udc00\ud800", "a\udbff"]
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\U0001f600",  # 😀
    "\ufeff",
    "\u2028\u2029",
    "\U0010ffff",
    "\u0130",  # İ: lower() makes two characters of it
    "%00",
    "../..",
    "\\",
    '"',
    "null",
    "-",
    "~",
    "/",
    "$ref",
    "pointer",
    "١٢٣",  # digits, not ASCII ones
]
PARAM_NAMES = ["async", "jobs", "partial", "failedOnly", "limit", "cursor", "status", "seconds"]
PARAM_NAMES += ["callbackUrl", "concurrency", "namespace", "action", "params", "id", "dependsOn", "x"]

# Valid JSON, but nasty: NUL, odd unicode, long strings, numbers at the edges of int64, uint64, double.
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(NASTY_STRINGS),
    st.builds(lambda char, n: char * n, st.sampled_from(["a", "é", "\x00", "😀"]), st.integers(1, 20_000)),
)
finite_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 1e308, 5e-324, -0.0]),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(NASTY_STRINGS), st.sampled_from(PARAM_NAMES))
small_json = st.recursive(
    st.one_of(st.none(), st.booleans(), finite_numbers, st.text(max_size=6), st.sampled_from(NASTY_STRINGS)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=5,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), finite_numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)

# Not JSON any more, though a careless client writes it: NaN, Infinity, numbers past a double's range,
# lone surrogates (as `"\ud800"` escapes, or as the invalid UTF-8 bytes they make).
broken_json = st.recursive(
    st.one_of(
        st.floats(),
        st.integers(min_value=10**308, max_value=10**400),
        st.sampled_from(SURROGATES),
        st.builds(lambda n: "\ud800" * n, st.integers(1, 5000)),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=4,
)


def nest(value: Any, levels: int, kind: str) -> Any:
    """`value` inside `levels` containers: lists, objects, or each in turn."""
    for level in range(levels):
        as_list = kind == "list" or (kind == "mixed" and level % 2 == 0)
        value = [value] if as_list else {"k": value}
    return value


def depth(value: Any) -> int:
    """How many containers deep `value` is nested (a scalar: 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# Any depth to 300, and often right around the wire's limit and orjson's.
levels = st.one_of(
    st.integers(1, 300),
    st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2),
    st.integers(ORJSON_MAX_DEPTH - 6, ORJSON_MAX_DEPTH + 2),
)
deep_values = st.builds(nest, json_values, levels, st.sampled_from(["list", "object", "mixed"]))
hostile_json = st.one_of(json_values, json_values, deep_values, broken_json)


def encode(value: Any, ascii_only: bool = True) -> bytes:
    """JSON text as Python writes it, lone surrogates and NaN included."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


# Header values as HTTP carries them: a tab, visible ASCII and bytes 0x80-0xFF, nothing around them.
HTTP_INVALID = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])


def header_safe(value: bytes) -> bytes:
    """`value` without what uvicorn's parser refuses (control characters: see
    test_requests_the_http_parser_refuses) or drops (surrounding spaces)."""
    return value.translate(None, HTTP_INVALID).strip(b" \t")


header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).map(
        lambda t: t.encode("latin-1")
    ),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=20).map(str.encode),  # UTF-8
    st.builds(lambda char, n: char * n, st.sampled_from([b"a", b"\xe9", b"9"]), st.integers(1, 40_000)),
).map(header_safe)


@st.composite
def ivvy_dates(draw: st.DrawFn) -> bytes:
    """IVVY-Date values: absurd years, fields out of range, skewed by up to ±12 days, junk."""
    kind = draw(st.sampled_from(["fields", "skewed", "text"]))
    if kind == "fields":
        year = draw(st.one_of(st.integers(0, 9999), st.integers(10_000, 10**12)))
        month, day = draw(st.integers(0, 99)), draw(st.integers(0, 99))
        hour, minute, second = (draw(st.integers(0, 99)) for _ in range(3))
        text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    elif kind == "skewed":
        text = format_timestamp(datetime.now(UTC) + timedelta(seconds=draw(st.floats(-1e6, 1e6))))
    else:
        text = draw(st.sampled_from(["", "now", "2026-01-01", "٢٠٢٦-01-01 00:00:00", "9999-12-31 23:59:59"]))
    return header_safe((text + draw(st.sampled_from(["", " UTC", " utc", " GMT", "Z"]))).encode())


@st.composite
def http_dates(draw: st.DrawFn) -> bytes:
    """Date values in the shape of RFC 1123, with absurd fields and zones."""
    weekday = draw(st.sampled_from(["Mon", "Tue", "Xyz", "", "Mon,"]))
    day = draw(st.integers(-5, 10**6))
    month = draw(st.sampled_from(["Jan", "Feb", "Dec", "Foo", "jan", "13"]))
    year = draw(st.one_of(st.integers(-100, 3000), st.integers(3000, 10**30)))
    hour, minute, second = (draw(st.integers(-1, 10**4)) for _ in range(3))
    zone = draw(
        st.one_of(
            st.sampled_from(["GMT", "UTC", "UT", "Z", "EST", "XYZ", "", "+0000", "-0000"]),
            st.integers(-(10**6), 10**6).map(lambda n: f"{n:+05d}"),
        )
    )
    text = f"{weekday}, {day:02d} {month} {year} {hour:02d}:{minute:02d}:{second:02d} {zone}"
    fresh = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return header_safe(draw(st.sampled_from([text, text.replace(" ", ""), fresh, fresh + " +9999"])).encode())


def md5_values(body: bytes) -> st.SearchStrategy[bytes]:
    right = content_md5(body)
    odd = [right.upper(), right[:-1], right + "0", base64.b64encode(bytes.fromhex(right)).decode()]
    return st.one_of(st.sampled_from(odd).map(str.encode), header_values)


def authorization_values(key: ApiKey) -> st.SearchStrategy[bytes]:
    """X-Api-Authorization values: a scheme, a key and a signature, each maybe wrong or missing."""
    parts = st.tuples(
        st.sampled_from(["IWS", "iws", "IwS", "Bearer", "", "IWS  ", "IWS\t"]),
        st.one_of(st.sampled_from([key.key, "x" * 129, "é", "key with space", ""]), st.text(max_size=10)),
        st.sampled_from([":", "", "::", " : "]),
        st.one_of(st.text("0123456789abcdefABCDEF", min_size=38, max_size=42), st.text(max_size=45)),
    )
    built = parts.map(lambda p: header_safe(f"{p[0]} {p[1]}{p[2]}{p[3]}".encode()))
    return st.one_of(built, header_values)


idempotency_keys = st.one_of(
    st.text(string.printable.strip(), min_size=1, max_size=300).map(lambda t: header_safe(t.encode())),
    st.sampled_from([b"a", b"\xe9t\xe9", b"\x85", b"a" * 255, b"a" * 256, b"key\tkey", "🔑".encode()]),
    header_values,
)
token_chars = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
ivvy_names = st.tuples(
    st.sampled_from(["IVVY", "ivvy", "Ivvy"]),
    st.sampled_from(["-", "_", ""]),
    st.text(token_chars, max_size=12),
).map("".join)


# Strategies: calls -----------------------------------------------------------------------------------

HEADER_TARGETS = [
    (uri("test", "ping"), b""),
    (uri("test", "echo"), b'{"a": [1, "two", null]}'),
    (uri("batch", "progress"), b'{"async": "0123456789abcdef0123456789abcdef"}'),
    (uri("batch", "run"), b'{"jobs": [{"namespace": "test", "action": "ping"}]}'),
    (uri("batch", "list"), b"{}"),
]


@st.composite
def mutated_headers(draw: st.DrawFn, key: ApiKey) -> Call:
    """A call whose headers are mutated (set, given twice, dropped), then mostly signed, then whose
    X-Api-Authorization may be mutated too (a second one, one of the wrong shape, none)."""
    target, body = draw(st.sampled_from(HEADER_TARGETS))
    date_style = draw(st.sampled_from(["ivvy", "http", "both", "none"]))
    now = datetime.now(UTC)
    headers = [("Content-Type", b"application/json"), ("Content-MD5", content_md5(body).encode())]
    if date_style in ("ivvy", "both"):
        headers.append(("IVVY-Date", format_timestamp(now).encode()))
    if date_style in ("http", "both"):
        headers.append(("Date", now.strftime("%a, %d %b %Y %H:%M:%S GMT").encode()))
    values: dict[str, st.SearchStrategy[bytes]] = {
        "Content-MD5": md5_values(body),
        "Content-Type": header_values,
        "IVVY-Date": st.one_of(ivvy_dates(), header_values),
        "Date": st.one_of(http_dates(), header_values),
        "Idempotency-Key": idempotency_keys,
        "X-Api-Version": header_values,
    }
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["set", "set", "add", "drop"]))
        name = draw(st.one_of(st.sampled_from(sorted(values)), ivvy_names))
        value = draw(values.get(name, header_values))
        if op != "add":
            headers = [(n, v) for n, v in headers if n.lower() != name.lower()]
        if op != "drop":
            headers.append((draw(st.sampled_from([name, name.lower(), name.upper()])), value))
    call = Call(target.encode(), tuple(headers), body)
    if not draw(rarely(10)):
        call = authorize(key, call)
    auth_op = draw(st.sampled_from(["keep"] * 9 + ["set", "add", "drop"]))
    if auth_op == "set":
        call = call.without("X-Api-Authorization").plus(
            ("X-Api-Authorization", draw(authorization_values(key)))
        )
    elif auth_op == "add":
        second = draw(
            st.one_of(st.just(call.header("X-Api-Authorization") or b""), authorization_values(key))
        )
        call = call.plus(("x-api-authorization", second))
    elif auth_op == "drop":
        call = call.without("X-Api-Authorization")
    return call


# Path segments and query parts as a request-target has them: ASCII, the rest percent-encoded.
segments = st.one_of(
    st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%", max_size=12),
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    st.binary(max_size=12).map(lambda data: "".join(f"%{b:02X}" for b in data)),
    st.sampled_from(["%", "%g1", "%f", "%00", "%2F", "%2e%2e", "..", ".", "%C0%AF", "%ED%A0%80", "%FF%FE"]),
)
VALID_ACTIONS = ["ping", "echo", "sleep", "run", "progress", "results", "status", "list", "cancel"]


@st.composite
def odd_targets(draw: st.DrawFn) -> bytes:
    """Mostly a route to an action, /api/1.0/{namespace}?action={action}, with a hostile namespace and
    action; otherwise a path and query of another shape."""
    odd_segments = st.one_of(
        st.sampled_from(["API", "", "api%00", "healthz", "2.0", "1.00", "1.0%00"]), segments
    )
    api, version, extra, tail = "api", "1.0", [], ""
    if draw(rarely(3)):  # a path of another shape
        api = draw(mostly(st.just("api"), odd_segments, one_in=2))
        version = draw(mostly(st.just("1.0"), odd_segments, one_in=2))
        extra = draw(mostly(st.just([]), st.lists(segments, min_size=1, max_size=2), one_in=2))
        tail = draw(st.sampled_from(["", "/", "//"]))
    namespace = draw(mostly(st.sampled_from(["test", "batch", "nope", "TEST"]), segments, one_in=2))
    path = "/" + "/".join([api, version, namespace, *extra]) + tail
    path = draw(
        mostly(st.just(path), st.sampled_from(["/healthz", "/healthz/", "//api/1.0/test", "*"]), one_in=15)
    )
    if path == "*":
        return b"*"
    names = mostly(
        st.just("action"), st.one_of(st.sampled_from(["ACTION", "action[]", "", "action%00"]), segments)
    )
    values = st.one_of(
        st.sampled_from([*VALID_ACTIONS, ""]),
        segments,
        st.integers(1000, 14_000).map(lambda n: "a" * n),  # with up to four of them, a URI up to ~60 kB
    )
    pairs = draw(
        mostly(
            st.lists(st.tuples(st.just("action"), values), min_size=1, max_size=1),
            st.lists(st.tuples(names, values), max_size=4),
        )
    )
    if not pairs:
        return path.encode()
    shape = mostly(st.just("{}={}"), st.sampled_from(["{}", "{}=={}", "{}={}#x"]), one_in=8)
    query = "&".join(draw(shape).format(name, value) for name, value in pairs)
    return (path + draw(mostly(st.just("?"), st.sampled_from(["?&", "?;", "??"]), one_in=8)) + query).encode()


@st.composite
def odd_paths(draw: st.DrawFn, key: ApiKey) -> Call:
    method = draw(
        mostly(
            st.just("POST"), st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]), one_in=6
        )
    )
    body = draw(st.sampled_from([b"", b"{}", b'{"a": 1}']))
    call = replace(unsigned(draw(odd_targets()), body), method=method)
    return authorize(key, call) if not draw(rarely(6)) else call


# Bodies, for every action.
BODY_TARGETS = [
    ("test", "echo"),
    ("test", "ping"),
    ("test", "sleep"),
    ("test", "nope"),
    ("nope", "nope"),
    ("batch", "run"),
    ("batch", "progress"),
    ("batch", "results"),
    ("batch", "status"),
    ("batch", "list"),
    ("batch", "repost"),
    ("batch", "restart"),
    ("batch", "cancel"),
    ("batch", "nope"),
]
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"\xef\xbb\xbf{}", b"{}\x00", b"\x00{}", b'{"a":1,"a":2}', b" \t\r\n", b"[][]", b"{" * 1025]
    ),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(250, 1100)),
    st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(250, 1100)),
)


@st.composite
def signed_bodies(draw: st.DrawFn, key: ApiKey) -> Call:
    namespace, action = draw(st.sampled_from(BODY_TARGETS))
    kind = draw(st.sampled_from(["object", "object", "json", "raw"]))
    if kind == "raw":
        body = draw(raw_bodies)
    else:
        values = st.dictionaries(keys, hostile_json, max_size=4) if kind == "object" else hostile_json
        body = encode(draw(values), ascii_only=draw(st.booleans()))
    return signed(key, uri(namespace, action), body)


# test.ping, test.echo and test.sleep, called directly.
SECONDS = [b"0", b"-0", b"0e0", b"1e-400", b"0.05", b"0.0500000000000000001", b"0.051", b"-1e-300", b"1E2"]
SECONDS += [b"18446744073709551616", b"1e999", b"NaN", b"Infinity", b"-Infinity", b"00", b"+1", b".5", b"1."]
SECONDS += [b"true", b"null", b'"0.01"', b"[0.01]", b'{"seconds": 0}', b"0x10", b"9" * 400]


@st.composite
def direct_test_calls(draw: st.DrawFn, key: ApiKey) -> Call:
    action = draw(st.sampled_from(["ping", "echo", "sleep"]))
    params: dict[str, Any] = {}
    if action == "echo":
        params = draw(st.dictionaries(keys, st.one_of(json_values, deep_values), max_size=5))
    if action == "sleep" and not draw(rarely(4)):
        params["seconds"] = draw(
            st.one_of(st.floats(0, SLEEP_CAP), st.integers(-5, 40), finite_numbers, small_json)
        )
    if draw(rarely(4)):
        params[draw(keys)] = draw(small_json)
    body = encode(params, ascii_only=draw(st.booleans()))
    if action == "sleep" and draw(rarely(3)):  # a number as no JSON encoder writes it
        body = b'{"seconds": ' + draw(st.sampled_from(SECONDS)) + b"}"
    body = draw(st.sampled_from([b"", b" ", b"\n\t"])) + body + draw(st.sampled_from([b"", b" ", b"\r\n"]))
    if action == "ping" and not params and draw(st.booleans()):
        body = b""  # the official SDKs send no body for a ping
    extra: list[tuple[str, bytes]] = []
    if draw(rarely(3)):
        extra.append(("Idempotency-Key", draw(idempotency_keys)))
    content_type = draw(mostly(st.just(b"application/json"), header_values))
    call = (
        unsigned(uri("test", action), body)
        .without("Content-Type")
        .plus(("Content-Type", content_type), *extra)
    )
    return authorize(key, call)


# batch.run: jobs that are mostly well-formed, with nasty contents (names in any script or 5000
# characters long, params deep or full of references), and one thing about them hostile now and then.
JOB_IDS = ["a", "b", "c", "é", "x" * 100]
ODD_JOB_IDS = ["", " ", "x" * 101, "a\x00"]
POINTERS = ["", "/", "/x", "/0", "/1", "/x/0", "/~0", "/~1", "/~2", "~1", "x", "/ack", "/a~1b", "//", "/%00"]
POINTERS += ["/x/99999999999999999999", "/x/-1", "/x/01", "/slept", "/p/k/k", "/x/0/y", "/x/-", "/-"]
odd_names = st.one_of(
    st.sampled_from(["batch", "nope", *NASTY_STRINGS]),
    st.text(max_size=10),
    st.integers(100, 5000).map(lambda n: "n" * n),
    small_json,
)
nasty_names = odd_names.filter(
    lambda name: isinstance(name, str) and name.strip() != "" and "\x00" not in name
)
namespaces = mostly(st.just("test"), nasty_names, one_in=6)
actions = mostly(
    st.sampled_from(["ping", "echo", "sleep"]), st.one_of(st.sampled_from(VALID_ACTIONS), nasty_names)
)
odd_pointers = st.one_of(st.text(max_size=8), small_json)


def references(ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """`{"$ref": id, "pointer": ...}`, mostly to a job of `ids` and with a pointer of POINTERS."""
    return st.fixed_dictionaries(
        {
            "$ref": mostly(
                st.sampled_from(ids), st.one_of(st.sampled_from(JOB_IDS + ODD_JOB_IDS), small_json), one_in=8
            )
        },
        optional={"pointer": mostly(st.sampled_from(POINTERS), odd_pointers, one_in=8)},
    )


def params_with_references(ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        st.one_of(st.none(), st.booleans(), finite_numbers, texts, references(ids)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
        max_leaves=8,
    )
    return st.dictionaries(keys, values, min_size=1, max_size=3)


sleep_params = st.fixed_dictionaries(
    {}, optional={"seconds": mostly(st.floats(0, SLEEP_CAP), st.one_of(finite_numbers, small_json))}
)
HOSTILITIES = ["namespace", "action", "params", "id", "dependsOn", "job", "reference", "extra"]


@st.composite
def batch_jobs(draw: st.DrawFn) -> list[Any]:
    """One to five jobs, each maybe with an id, waiting for earlier ones, referring to their answers;
    now and then one of them with one hostile field."""
    ids = draw(st.permutations(JOB_IDS))
    jobs: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 5))):
        earlier = [job["id"] for job in jobs if "id" in job]
        job: dict[str, Any] = {"namespace": draw(namespaces), "action": draw(actions)}
        shape = draw(
            st.sampled_from(["refs", "deep", "plain", "none"])
            if earlier
            else st.sampled_from(["deep", "plain", "none"])
        )
        if job["action"] == "sleep":
            job["params"] = draw(sleep_params)
        elif shape == "refs":
            job["params"] = draw(params_with_references(earlier))
        elif shape == "deep":
            job["params"] = draw(deep_values.map(lambda value: {"p": value}))
        elif shape == "plain":
            listed = st.fixed_dictionaries({"x": st.lists(json_values, max_size=3)})  # for "/x/0", "/x/-"
            job["params"] = draw(st.one_of(st.dictionaries(keys, json_values, max_size=4), listed))
        if draw(st.booleans()):
            job["id"] = ids[index]
        if earlier and draw(rarely(3)):
            job["dependsOn"] = draw(st.lists(st.sampled_from(earlier), max_size=3))
        jobs.append(job)
    if draw(rarely(3)):
        index = draw(st.integers(0, len(jobs) - 1))
        job, hostility = jobs[index], draw(st.sampled_from(HOSTILITIES))
        if hostility in ("namespace", "action", "params"):
            if draw(st.booleans()):
                job[hostility] = draw(odd_names if hostility != "params" else small_json)
            else:
                job.pop(hostility, None)
        elif hostility == "id":
            job["id"] = draw(
                st.one_of(st.sampled_from([*ODD_JOB_IDS, *[j["id"] for j in jobs if "id" in j]]), small_json)
            )
        elif hostility == "dependsOn":
            job["dependsOn"] = draw(
                st.one_of(st.lists(st.sampled_from(JOB_IDS + ODD_JOB_IDS), max_size=3), small_json)
            )
        elif hostility == "job":
            jobs[index] = draw(small_json)
        elif hostility == "reference":
            job["params"] = {
                "r": draw(references(JOB_IDS + ODD_JOB_IDS)),
                **draw(st.dictionaries(keys, small_json, max_size=2)),
            }
        else:
            job[draw(keys)] = draw(small_json)
    return jobs


def safe_callback(url: Any) -> bool:
    """Whether sending `url` as callbackUrl makes no request but to 127.0.0.1: the server refuses it
    without resolving anything, or it names a host under .invalid (which does not resolve), or it is
    on 127.0.0.1, the one address allowed."""
    if not isinstance(url, str):
        return True
    try:
        host = ALLOWED_CALLBACKS.check_url(url)
    except UnsafeAddress:
        return True
    return host == "127.0.0.1" or host.endswith(".invalid")


def callback_urls(receiver_url: str) -> st.SearchStrategy[Any]:
    paths = st.one_of(st.sampled_from(["/hook", "/", "", "/a%00b", "/é", "/?q=1#frag", "/../x"]), segments)
    odd = st.one_of(
        st.sampled_from(
            [
                "http://127.0.0.1:1/closed",  # allowed, but nothing listens: retried, then abandoned
                "http://10.0.0.1/",
                "http://169.254.169.254/latest/meta-data",
                "http://[::1]/",
                "http://localhost/",
                "http://0x7f000001/",
                "http://2130706433/",
                "http://user:pass@127.0.0.1/",
                "ftp://127.0.0.1/",
                "http:///nohost",
                "http://hooks.invalid/x",
                "http://\x00.invalid/",
                "http://[::ffff:10.0.0.1]/",
                "http://999.999.999.999/",
                "javascript:alert(1)",
                "",
                "\x00",
            ]
        ),
        st.text(max_size=16).map(lambda text: f"http://{text}.invalid/"),
        st.text(max_size=20),
        small_json,
    )
    return mostly(paths.map(lambda path: receiver_url + path), odd, one_in=2).filter(safe_callback)


@st.composite
def signed_runs(draw: st.DrawFn, key: ApiKey, receiver_url: str) -> Call:
    params: dict[str, Any] = {}
    if not draw(rarely(20)):
        params["jobs"] = draw(batch_jobs())
    else:
        params["jobs"] = draw(
            st.one_of(small_json, st.just([]), st.just([{"namespace": "test", "action": "ping"}] * 201))
        )
    if draw(st.booleans()):
        params["callbackUrl"] = draw(callback_urls(receiver_url))
    if draw(rarely(3)):
        params["concurrency"] = draw(
            mostly(st.integers(1, 50), st.one_of(st.integers(-2, 60), finite_numbers, small_json))
        )
    if draw(rarely(10)):
        params[draw(keys)] = draw(hostile_json)
    extra = [("Idempotency-Key", draw(idempotency_keys))] if draw(rarely(4)) else []
    return signed(key, uri("batch", "run"), encode(params), *extra)


# The other actions of the batch namespace, on batches that exist.
def cursors(real: list[str]) -> st.SearchStrategy[Any]:
    def cursor(created_at: Any, batch_id: Any, padded: bool) -> str:
        text = base64.urlsafe_b64encode(encode([created_at, batch_id])).decode()
        return text if padded else text.rstrip("=")

    made = st.builds(
        cursor,
        st.one_of(finite_numbers, st.floats(), small_json),
        st.one_of(texts, st.sampled_from(SURROGATES), small_json),
        st.booleans(),
    )
    return st.one_of(
        st.sampled_from(real),
        made,
        st.binary(max_size=40).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        texts,
        small_json,
    )


@st.composite
def batch_calls(draw: st.DrawFn, key: ApiKey, async_ids: list[str], real_cursors: list[str]) -> Call:
    action = draw(
        mostly(
            st.sampled_from(["progress", "results", "status", "list", "repost", "restart", "cancel"]),
            odd_names,
        )
    )
    params: dict[str, Any] = {}
    if not draw(rarely(6)):
        real = st.sampled_from(async_ids)
        variants = real.flatmap(
            lambda async_id: st.sampled_from(
                [async_id.upper(), f" {async_id}", async_id[:-1], async_id + "\x00"]
            )
        )
        params["async"] = draw(mostly(real, st.one_of(variants, texts, small_json)))
    for name, values in (
        ("partial", st.booleans()),
        ("failedOnly", st.booleans()),
        ("limit", st.integers(-2, 102)),
        ("status", st.sampled_from(["queued", "running", "complete", "cancelled"])),
    ):
        if draw(rarely(4)):
            params[name] = draw(mostly(values, st.one_of(finite_numbers, texts, small_json)))
    if draw(rarely(4)):
        params["cursor"] = draw(cursors(real_cursors))
    if draw(rarely(6)):
        params[draw(keys)] = draw(hostile_json)
    body = encode(params) if not draw(rarely(10)) else draw(st.one_of(raw_bodies, small_json.map(encode)))
    return signed(
        key, uri("batch", str(action) if isinstance(action, str) else encode(action).decode()), body
    )


# The property tests ----------------------------------------------------------------------------------


async def test_hostile_headers_signed_and_unsigned(target: Target) -> None:
    """X-Api-Authorization, Content-MD5, Content-Type, IVVY-Date, Date, Idempotency-Key, X-Api-Version
    and IVVY-* headers of every shape, set, given twice or dropped, on calls signed after the mutation
    (so the checks behind the signature see them) and on calls left unsigned or mis-signed."""
    await target.explore(mutated_headers(target.key), target.send, examples=250)
    await target.settle()


async def test_hostile_paths_and_query_strings(target: Target) -> None:
    """Namespaces, versions and actions of percent-encoded bytes, NUL, unicode and malformed escapes;
    duplicate and odd `action` parameters; URIs up to ~60 kB; every method; signed and unsigned."""
    await target.explore(odd_paths(target.key), target.send, examples=200)
    await target.settle()


async def test_hostile_bodies_of_signed_calls(target: Target) -> None:
    """Arbitrary bytes and arbitrary JSON (nesting to 300 levels and past orjson's 1024, huge numbers,
    NaN, strings with NUL or lone surrogates, long strings) as the body of every action, signed."""
    await target.explore(signed_bodies(target.key), target.send, examples=250)
    await target.settle()


async def test_hostile_batch_runs(target: Target) -> None:
    """batch.run with hostile jobs: namespace and action of every type (NUL, unicode, 5000 characters),
    params deep or full of `$ref` objects with odd pointers, `id` and `dependsOn` of every type,
    `concurrency` and `callbackUrl` of every type, other keys, an Idempotency-Key; the batches it
    accepts run to their end, callbacks included, and the worker must log nothing bad either."""
    await target.explore(signed_runs(target.key, target.receiver.url), target.send, examples=150)
    await target.settle()


async def test_hostile_calls_of_the_other_batch_actions(target: Target) -> None:
    """progress, results (`partial`), status, list (`limit`, `cursor`, `status`), repost, restart
    (`failedOnly`) and cancel, with `async` of every type and value and extra parameters, on batches
    that exist: complete, with a callback, with a failed job, running, and another account's."""
    async with target.live.client() as api, target.live.client(target.live.other_key) as other:
        ping, sleep = {"namespace": "test", "action": "ping"}, {"namespace": "test", "action": "sleep"}
        done = await api.run([ping, {"namespace": "test", "action": "echo", "params": {"a": [1]}}])
        hooked = await api.run([ping], callback_url=target.receiver.url + "/hook")
        failed = await api.run([{"namespace": "test", "action": "nope"}, ping])
        running = await api.run([{**sleep, "params": {"seconds": SLEEP_CAP}}] * 100)
        foreign = await other.run([ping])
        for async_id in (done, hooked, failed):
            await api.wait(async_id, poll_s=0.05, timeout_s=10)
        cursor = (await api.list_batches(limit=1))["nextCursor"]
        calls = batch_calls(target.key, [done, hooked, failed, running, foreign], [cursor])
        await target.explore(calls, target.send, examples=200)
        for async_id in (done, hooked, failed, running):  # a restart may have started any of them again
            with contextlib.suppress(ApiError):  # it had finished
                await api.cancel(async_id)
    await target.settle()


async def test_hostile_calls_of_the_test_namespace(target: Target) -> None:
    """test.ping, test.echo and test.sleep called directly: `seconds` of every type and spelling (1e999,
    -0, 1e-400, a string, 400 digits), echo of anything, other parameters, odd content types."""
    await target.explore(direct_test_calls(target.key), target.send, examples=150)
    await target.settle()


# What uvicorn's HTTP parser refuses before batchgate sees the request --------------------------------


def raw_request(target: bytes, *headers: bytes) -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


PING = b"/api/1.0/test?action=ping"
EMPTY = b"Content-Length: 0"
UNPARSEABLE = {
    "non-ascii-in-target": raw_request(b"/api/1.0/t\xc3\xa9st?action=ping", EMPTY),
    "control-char-in-header": raw_request(PING, b"X-Api-Authorization: a\x01b", EMPTY),
    "nul-in-header": raw_request(PING, b"IVVY-Date: \x00", EMPTY),
    "content-length-twice": raw_request(PING, EMPTY, EMPTY),
    "content-length-not-a-number": raw_request(PING, b"Content-Length: \xb2"),
    "uri-over-64k": raw_request(PING + b"a" * 70_000, EMPTY),
}


async def test_requests_the_http_parser_refuses_get_a_wire_error_without_a_traceback(target: Target) -> None:
    for name, request_bytes in UNPARSEABLE.items():
        answer = await asyncio.to_thread(exchange, target.port, request_bytes)
        assert answer.status == 400, (name, answer)
        check_answer(Call(b""), answer)  # the wire's error body, not uvicorn's text
    assert not target.bad_records(), describe(target.bad_records())


# Inputs the server once failed on, found by the tests above ------------------------------------------


def deep_lists(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def run_to_the_end(server: Target, body: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Submits a batch, and holds it to finishing with nothing bad in the log (a worker that crashes on
    it logs a traceback at once and again each time the lease runs out); its results."""
    async_id = (await server.asend(signed(server.key, uri("batch", "run"), orjson.dumps(body))))["asyncId"]
    deadline, status = time.monotonic() + timeout_s, {}
    while not server.bad_records() and time.monotonic() < deadline:
        status = await server.asend(
            signed(server.key, uri("batch", "status"), orjson.dumps({"async": async_id}))
        )
        if status["status"] == "complete":
            break
        await asyncio.sleep(0.05)
    assert not server.bad_records(), describe(server.bad_records())
    assert status["status"] == "complete", status
    results = signed(server.key, uri("batch", "results"), orjson.dumps({"async": async_id}))
    return cast(dict[str, Any], await server.asend(results))


def error_of(answer: Any) -> tuple[int, int | None]:
    return answer["errorCode"], answer.get("specificCode")


async def test_params_nested_deeper_than_the_limit_are_refused(target: Target) -> None:
    # once: test.echo of 255 levels answered 500, as orjson writes no deeper than 254
    deep = signed(target.key, uri("test", "echo"), b'{"a":' + deep_lists(MAX_DEPTH) + b"}")
    assert error_of(await target.asend(deep)) == (400, None)
    # once: an Idempotency-Key on such a run answered 500 too
    body = b'{"jobs":[{"namespace":"test","action":"ping"}],"x":' + deep_lists(254) + b"}"
    run = signed(target.key, uri("batch", "run"), body, ("Idempotency-Key", b"k"))
    assert error_of(await target.asend(run)) == (400, None)
    # as deep as the limit is fine
    body = b'{"a":' + deep_lists(MAX_DEPTH - 1) + b"}"
    echoed = await target.asend(signed(target.key, uri("test", "echo"), body))
    assert depth(echoed) >= MAX_DEPTH, echoed  # the params, in echo's answer


async def test_a_reference_to_the_end_of_an_array_fails_its_job(target: Target) -> None:
    # once: jsonpointer's EndOfList for "/x/-" crashed the worker, at every lease
    jobs = [
        {"id": "a", "namespace": "test", "action": "echo", "params": {"x": [1]}},
        {"namespace": "test", "action": "echo", "params": {"v": {"$ref": "a", "pointer": "/x/-"}}},
    ]
    results = await run_to_the_end(target, {"jobs": jobs})
    assert error_of(results["results"][1]["response"]) == (461, REFERENCE_UNRESOLVED)


async def test_a_reference_that_resolves_too_deep_fails_its_job(target: Target) -> None:
    # once: params resolved past orjson's 254 levels crashed the worker, at every lease
    deep = orjson.loads(deep_lists(MAX_DEPTH - 4))
    jobs = [
        {"id": "a", "namespace": "test", "action": "echo", "params": {"x": deep}},
        {"namespace": "test", "action": "echo", "params": {"v": [[[[[{"$ref": "a"}]]]]]}},
    ]
    results = await run_to_the_end(target, {"jobs": jobs})
    assert error_of(results["results"][1]["response"]) == (461, REFERENCE_UNRESOLVED)


async def test_a_nul_in_an_async_id_is_not_found(target: Target) -> None:
    # once, on PostgreSQL, whose text cannot hold NUL: 500
    progress = signed(target.key, uri("batch", "progress"), b'{"async":"\\u0000"}')
    assert error_of(await target.asend(progress)) == (400, BATCH_NOT_FOUND)


async def test_a_nul_in_a_job_id_is_refused(target: Target) -> None:
    # once, on PostgreSQL: 500 / 24091
    body = b'{"jobs":[{"namespace":"test","action":"ping","id":"\\u0000"}]}'
    assert error_of(await target.asend(signed(target.key, uri("batch", "run"), body))) == (
        400,
        INCORRECT_JOB_FORMAT,
    )
