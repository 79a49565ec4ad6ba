"""The console's templates (Jinja2, autoescaped, shipped in the package) and the filters that make
its numbers and times readable: ages, durations, UTC times, JSON bodies folded when large."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from batchgate.admin import chart, static

FOLD_CHARS = 240  # a body longer than this, or of more lines than FOLD_LINES, is folded
FOLD_LINES = 8
SHOW_CHARS = 16_000  # past this a body is cut (a page may hold 400 of them): the admin API has it whole
NONE = "\u2013"  # an en dash: no value
UNITS = (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1))


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON body as shown: pretty, folded behind a one-line preview when large."""

    pretty: str
    preview: str
    size: int
    folded: bool
    cut: bool


def body(text: str | None) -> Body | None:
    if text is None:
        return None
    try:
        pretty = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pretty = text
    size = len(text.encode())
    folded = len(pretty) > FOLD_CHARS or pretty.count("\n") >= FOLD_LINES
    compact = " ".join(pretty.split())
    preview = compact if len(compact) <= 90 else compact[:88] + " …"
    return Body(pretty[:SHOW_CHARS], preview, size, folded, len(pretty) > SHOW_CHARS)


def error_message(response: str | None) -> str | None:
    """The message of an error body (a failed job's response), if it has one."""
    if not response or '"message"' not in response:
        return None
    try:
        value = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    message = value.get("message") if isinstance(value, dict) else None
    return message if isinstance(message, str) else None


def utc(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float | None) -> str:
    """A length of time, in the two largest units that matter: `45 s`, `3 min 20 s`, `2 h 5 min`."""
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for unit, size, small, small_size in UNITS:
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size} {unit}" + (f" {rest} {small}" if rest else "")
    return f"{whole} s"


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 1:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return span(value / 1000)


def size(value: int) -> str:
    if value < 1024:
        return f"{value:,} bytes"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KB"
    return f"{value / 1024 / 1024:.1f} MB"


def _svg(series: list[tuple[float, int]]) -> Markup:
    return Markup(chart.jobs_chart(series))  # noqa: S704 - built from numbers, its one text escaped


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("batchgate.admin", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=utc, iso=iso, span=span, ms=ms, size=size, body=body, error_message=error_message)
    env.globals.update(static=static.url, chart=_svg)
    return env


class Pages:
    """Renders the console's templates by name."""

    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
