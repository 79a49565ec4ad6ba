"""SQL lives here, one folder per dialect: `queries.sql` (named with `-- name: x`) and `migrations/`."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect."""
    text = resources.files(__name__).joinpath(dialect, "queries.sql").read_text()
    parts = _NAME.split(text)[1:]
    return {name: body.strip().rstrip(";") for name, body in zip(parts[::2], parts[1::2], strict=True)}


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) for every migration of a dialect, in order; files are `NNNN_title.sql`."""
    folder = resources.files(__name__).joinpath(dialect, "migrations")
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)
