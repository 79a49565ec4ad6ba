"""The example's SQLite tables, used from sync handlers: batchgate runs each in its thread pool,
so a blocking `sqlite3` call never holds up the event loop.

One short-lived connection per call keeps the threads apart; WAL lets readers go on while a
writer commits, and the busy timeout makes concurrent writers queue instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.sql")
DEFAULT_PATH = "ivvy_events.db"


def db_path() -> str:
    """Read at each connection, so a test (or an operator) can point it elsewhere before start-up."""
    return os.environ.get("IVVY_EVENTS_DB", DEFAULT_PATH)


def now() -> str:
    """The API's timestamp form, in UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextlib.contextmanager
def connect(*, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection whose work commits when the block ends, or rolls back on an exception.

    `write` takes the write lock at once (BEGIN IMMEDIATE), so a read-then-write, such as
    "is there an answer for this idempotency key? if not, act and store it", is not interleaved.
    """
    conn = sqlite3.connect(db_path(), timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def create_tables() -> None:
    conn = sqlite3.connect(db_path(), timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA.read_text(encoding="utf-8"))
    finally:
        conn.close()


def once(
    conn: sqlite3.Connection, account: str, key: str | None, act: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """`act()`'s answer, stored under the job's idempotency key; a repeat of the job gets it again.

    A job runs at least once (a worker that dies mid-batch is replaced, and the job runs again),
    so an action that creates something remembers what it answered. Direct calls have no key.
    """
    if key is None:
        return act()
    row = conn.execute(
        "SELECT response FROM replies WHERE account = ? AND idempotency_key = ?", (account, key)
    ).fetchone()
    if row is not None:
        answer: dict[str, Any] = json.loads(row["response"])
        return answer
    answer = act()
    conn.execute(
        "INSERT INTO replies (account, idempotency_key, response) VALUES (?, ?, ?)",
        (account, key, json.dumps(answer)),
    )
    return answer
