"""Logging: one line per event, readable or as JSON, batchgate's and uvicorn's alike.

batchgate's own event lines (events.py) go through `events`, a structlog logger with the facts as
keyword arguments (asyncId, account, job, webhook-id, ...). Until `configure` is called they become
standard-library records, so that an application or a test that embeds batchgate sees them where
it sees its own. A batchgate command owns its process and calls `configure`: then they are
rendered by structlog and written straight to standard error without a standard-library record
(three lines a batch are on the hot path: about 7 us a line instead of 40), and every other
record (uvicorn's, other libraries') is formatted by structlog into the same shape. Secrets and
request or response bodies are never logged.
"""

from __future__ import annotations

import functools
import json as stdlib_json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

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
    events = structlog.wrap_logger(
        structlog.BytesLogger(sys.stderr.buffer) if json else structlog.WriteLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            _utc_timestamp,
            structlog.processors.JSONRenderer(serializer=_json_bytes) if json else renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level.upper()),
        cache_logger_on_first_use=True,
    ).bind(logger=EVENTS)


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
