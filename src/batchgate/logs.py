"""Logging: one line per event, readable or as JSON, batchgate's and uvicorn's alike.

batchgate logs through the standard library; the facts of an event go in `extra` (asyncId,
account, job, webhook-id, ...) and become fields of the line. structlog formats every record,
including uvicorn's and other libraries', so an operator's log shipper sees one shape. Secrets
and request or response bodies are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def configure(*, level: str = "info", json: bool = False) -> None:
    """Sends every log record to standard error, formatted; `json` writes one JSON object a line."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
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


def _drop_color_message(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn adds a copy of its message with terminal colours: not for a log line."""
    event.pop("color_message", None)
    return event
