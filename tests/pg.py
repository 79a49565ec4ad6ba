"""PostgreSQL for tests: a fresh database per test on the server named by BATCHGATE_TEST_PG.

Skipped when no server answers, except in CI (the CI environment variable is set), where a
missing PostgreSQL fails the test instead: CI must never pass by skipping it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

BASE_URL = os.environ.get("BATCHGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_of(database: str, base: str = BASE_URL) -> str:
    """The base URL with its database replaced."""
    return urlunsplit(urlsplit(base)._replace(path="/" + database))


def unavailable(reason: str) -> None:
    """Skips the test, or fails it in CI."""
    message = f"PostgreSQL at {BASE_URL} is not available: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI never skips PostgreSQL)")
    pytest.skip(message)


async def admin() -> asyncpg.Connection:
    """A connection to the base database, for CREATE and DROP DATABASE."""
    try:
        return await asyncpg.connect(BASE_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        unavailable(f"{type(exc).__name__}: {exc}")
        raise  # unreachable: unavailable() always raises


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Creates an empty database, yields its URL, and drops it (and its connections) afterwards."""
    name = f"bg_test_{secrets.token_hex(6)}"
    conn = await admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url_of(name)
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Runs one query on its own connection, for tests that look at or change the database directly."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def execute(url: str, script: str) -> None:
    """Runs a script of many statements (a dump, say) on its own connection."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def locked(url: str, table: str) -> AsyncIterator[None]:
    """Holds an exclusive lock on a table from another connection, as a stuck transaction would."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()
