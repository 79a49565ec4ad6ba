"""Reading the filters of a list (status, since, limit, cursor), the same for the console and the
admin API: a value that cannot be read is a BadRequest naming the parameter and what it takes."""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from batchgate.models import BatchStatus
from batchgate.protocol.errors import BadRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_CHOICES = (
    ("", "any time"),
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("6h", "last 6 hours"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
)


@dataclass(frozen=True, slots=True)
class BatchFilter:
    account: str | None
    status: BatchStatus | None
    since: float | None
    limit: int
    before: tuple[float, str] | None


def batch_filter(query: dict[str, str], now: float) -> BatchFilter:
    return BatchFilter(
        account=query.get("account", "").strip() or None,
        status=status_of(query.get("status", "")),
        since=since_of(query.get("since", ""), now),
        limit=limit_of(query.get("limit", "")),
        before=cursor_of(query.get("cursor", "")),
    )


def status_of(text: str) -> BatchStatus | None:
    if not text:
        return None
    try:
        return BatchStatus(text)
    except ValueError:
        allowed = ", ".join(status.value for status in BatchStatus)
        raise BadRequest(f"status must be one of {allowed}, not {text!r}") from None


def since_of(text: str, now: float) -> float | None:
    """A span back from now (`15m`, `1h`, `7d`), Unix seconds, or a UTC time (`2026-12-02 16:21`)."""
    text = text.strip()
    if not text:
        return None
    span = _SPAN.fullmatch(text)
    if span:
        return now - float(span.group(1)) * _UNIT_S[span.group(2)]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    try:
        at = datetime.fromisoformat(text.removesuffix(" UTC"))
    except ValueError:
        raise BadRequest(
            f"since must be a span such as 15m, 1h or 7d, Unix seconds, or a UTC time, not {text!r}"
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def limit_of(text: str) -> int:
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def cursor(created_at: float, item_id: str) -> str:
    """The opaque cursor of the page after the item a page ended with."""
    return base64.urlsafe_b64encode(orjson.dumps([created_at, item_id])).decode().rstrip("=")


def cursor_of(text: str) -> tuple[float, str] | None:
    if not text:
        return None
    try:
        created_at, item_id = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise TypeError(created_at)
        if not isinstance(item_id, str) or not math.isfinite(created_at):
            raise TypeError(item_id)
    except (TypeError, ValueError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("cursor must be a nextCursor this API answered") from None
    return float(created_at), item_id
