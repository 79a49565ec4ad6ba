"""The infrastructure the systems share: Redis (Celery, arq, SAQ) and PostgreSQL (batchgate,
procrastinate).

Every repetition gets fresh state: a FLUSHDB of the benchmark's own Redis database number (not
the whole server), or a PostgreSQL database created for it and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

try:
    import redis.asyncio as aioredis
except ImportError:  # the bench extra is not installed: the Redis-based systems are skipped
    aioredis = None


@dataclass(frozen=True)
class Infra:
    redis_url: str  # redis://127.0.0.1:6379/9: its database number is the benchmark's own
    pg_url: str  # an admin connection, for CREATE/DROP DATABASE


# Redis -------------------------------------------------------------------------------------------


async def redis_problem(url: str) -> str | None:
    """Why Redis cannot be used, or None."""
    if aioredis is None:
        return "the redis package is not installed (pip install -e '.[bench]')"
    try:
        client = aioredis.from_url(url, socket_connect_timeout=2)
        async with client:
            await client.ping()
    except Exception as exc:
        return f"Redis at {url} does not answer: {exc}"
    return None


async def redis_flush(url: str) -> None:
    assert aioredis is not None
    async with aioredis.from_url(url) as client:
        await client.flushdb()


async def redis_info(url: str) -> dict[str, Any]:
    """Version, pid and the persistence settings of the Redis server."""
    assert aioredis is not None
    async with aioredis.from_url(url, decode_responses=True) as client:
        server = await client.info("server")
        config: dict[str, Any] = {}
        for name in ("appendonly", "appendfsync", "save"):
            config.update(await client.config_get(name))
    return {"version": server.get("redis_version"), "pid": server.get("process_id"), **config}


async def redis_config(url: str, settings: dict[str, str]) -> dict[str, str]:
    """Sets server settings; returns the previous values, to restore them afterwards."""
    assert aioredis is not None
    async with aioredis.from_url(url, decode_responses=True) as client:
        previous: dict[str, str] = {}
        for name, value in settings.items():
            previous.update(await client.config_get(name))
            await client.config_set(name, value)
    return previous


# PostgreSQL --------------------------------------------------------------------------------------


def pg_url_of(base: str, database: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + database))


async def pg_problem(admin_url: str) -> str | None:
    try:
        conn = await asyncpg.connect(admin_url, timeout=3)
    except Exception as exc:
        return f"PostgreSQL at {admin_url} does not answer: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def pg_create(admin_url: str, prefix: str = "bench") -> str:
    """A new empty database; its URL."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return pg_url_of(admin_url, name)


async def pg_drop(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def pg_info(admin_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(admin_url)
    try:
        info = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections")
        }
    finally:
        await conn.close()
    return info


@contextlib.asynccontextmanager
async def pg_server_settings(admin_url: str, settings: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """Server settings that a reload applies, for the length of a run (ALTER SYSTEM, then reset, so
    that the configuration files' values apply again); yields the values they replaced."""
    conn = await asyncpg.connect(admin_url)
    try:
        previous = {name: str(await conn.fetchval(f"SHOW {name}")) for name in settings}
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    try:
        yield previous
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            for name in settings:
                await conn.execute(f"ALTER SYSTEM RESET {name}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()


async def pg_pids(admin_url: str, url: str) -> list[int]:
    """The server processes serving one database, and the server's background processes."""
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type <> 'client backend'", name
        )
        mine = int(await conn.fetchval("SELECT pg_backend_pid()"))
        postmaster = _parent(mine)
    finally:
        await conn.close()
    pids = {int(row["pid"]) for row in rows} - {mine}
    return sorted(pids | ({postmaster} if postmaster else set()))


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])
