"""Logging: one line per event, readable or as JSON, batchgate's and uvicorn's alike.

batchgate's own event lines (events.py) go through `events`, a structlog logger with the facts as
keyword arguments (asyncId, account, job, webhook-id, ...). Until `configure` is called they become
standard-library records, so that an application or a test that embeds batchgate sees them where
it sees its own. A batchgate command owns its process and calls `configure`: then they are
rendered by structlog without a standard-library record (three lines a batch are on the hot path:
about 7 us a line instead of 40) and written to standard error together, at most 0.1 s after the
first of them (`BufferedLines` says why), and every other record (uvicorn's, other libraries') is
formatted by structlog into the same shape. Secrets and request or response bodies are never
logged.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json as stdlib_json
import logging
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

EVENTS = "batchgate.events"

# replaced by `configure`; read as `logs.events` at each call, so that the replacement is seen
events: Any = structlog.wrap_logger(
    logging.getLogger(EVENTS),
    processors=[structlog.stdlib.filter_by_level, structlog.stdlib.render_to_log_kwargs],
    wrapper_class=structlog.stdlib.BoundLogger,
)


def configure(*, level: str = "info", json: bool = False) -> None:
    """Sends every log line to standard error, formatted; `json` writes one JSON object a line."""
    global events
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_text)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info if json else structlog.processors.ExceptionPrettyPrinter(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # into the same handler, not their own
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    lines = BufferedLines(sys.stderr.buffer)
    atexit.register(lines.write_out)
    events = structlog.wrap_logger(
        structlog.BytesLogger(lines) if json else structlog.WriteLogger(lines),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            _utc_timestamp,
            structlog.processors.JSONRenderer(serializer=_json_bytes) if json else renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level.upper()),
        cache_logger_on_first_use=True,
    ).bind(logger=EVENTS)


class BufferedLines:
    """A binary stream whose lines go out together, at most `interval_s` after the first of them
    (or once `max_bytes` wait), instead of with a write each. Each write lets the GIL go, and the
    SQLite writer thread then keeps it while the event loop waits: in one 8-repetition bench run,
    `run` calls/s with JSON info logs were 930 written line by line, 1,027 buffered and 1,008
    without info logs. Outside an event loop (a thread, the command line) a line goes out at
    once; at exit, whatever waits. A kill -9 loses at most the last `interval_s` of lines."""

    def __init__(self, stream: BinaryIO, *, interval_s: float = 0.1, max_bytes: int = 64 * 1024) -> None:
        self._stream = stream
        self.interval_s, self.max_bytes = interval_s, max_bytes
        self._pending: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop whose timer writes them out
        os.register_at_fork(after_in_child=self._forget)

    def write(self, data: bytes | str) -> int:
        """A line: bytes (JSON) or text (console)."""
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if loop is not None and self._due_on is not loop:  # (a loop may end before its timer)
                loop.call_later(self.interval_s, self.write_out)
                self._due_on = loop
            self._pending.append(data)
            self._size += len(data)
            now = loop is None or self._size >= self.max_bytes
        if now:
            self.write_out()
        return len(data)

    def flush(self) -> None:
        """Called after every line: the lines wait for the timer instead."""

    def _forget(self) -> None:
        """In a forked child (a process action's): the lines waiting are the parent's to write."""
        self._pending, self._size, self._due_on = [], 0, None
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def write_out(self) -> None:
        with self._lock:
            lines, self._pending, self._size, self._due_on = self._pending, [], 0, None
        if lines:
            self._stream.write(b"".join(lines))
            self._stream.flush()


def _utc_timestamp(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The time as TimeStamper(fmt="iso", utc=True) writes it (2026-12-03T07:44:31.341461Z), at half
    its cost (an aware datetime's isoformat was a third of a line's time)."""
    now = time.time()
    second = int(now)
    event["timestamp"] = f"{_utc_second(second)}.{int((now - second) * 1_000_000):06d}Z"
    return event


@functools.lru_cache(maxsize=2)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _json_bytes(event: Any, **_: Any) -> bytes:
    """orjson; the standard library's json where orjson refuses (a lone surrogate in a string a
    client sent, which json escapes): a line is always written."""
    try:
        return orjson.dumps(event, default=repr)
    except (orjson.JSONEncodeError, TypeError):
        return stdlib_json.dumps(event, default=repr).encode()


def _json_text(event: Any, **_: Any) -> str:
    return _json_bytes(event).decode()


def _drop_color_message(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn adds a copy of its message with terminal colours: not for a log line."""
    event.pop("color_message", None)
    return event
