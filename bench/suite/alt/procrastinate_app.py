"""procrastinate + PostgreSQL, with a counter row: the API stores the batch's row and defers its 200
jobs in one transaction (`batch_defer_async` on that transaction's connection, procrastinate's
documented `configure(connection=...)`); each job then, in one transaction of its own, inserts its
result, adds one to its batch's counter and, when that counter reaches the batch's size, defers
`send_callback` on the same connection, so that the last result and the callback job commit
together. `send_callback` reads the results in order and POSTs them.

    uvicorn bench.suite.alt.procrastinate_app:asgi                     # the API process
    python -m bench.suite.alt.procrastinate_cli migrate                # procrastinate's schema + ours
    python -m bench.suite.alt.procrastinate_cli [--log-level L] worker [options]  # its CLI, uvloop

procrastinate (3.10) has no group, chord or job dependency: the counter row is the PostgreSQL way
to fan in. A result is inserted at most once (its batch and index are its key), and only a fresh
insert counts, so a job that procrastinate runs again (a stalled worker's job retried) neither
counts twice nor defers a second callback.

The worker is procrastinate's own CLI (`procrastinate --app ... worker`), run under uvloop; its
options are the system's defaults or tuned knobs (systems/alternatives.py). Job arguments and
results go through orjson (the connector's documented `json_dumps`/`json_loads`). The connection
pool is the connector's: psycopg_pool's default size (4) unless BENCH_PRO_POOL sets `max_size`.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
from bench.suite.alt import common
from procrastinate import App, JobContext, PsycopgConnector

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/bench_procrastinate")
APP_PATH = "bench.suite.alt.procrastinate_app.app"
TABLES = """
CREATE TABLE bench_batch (
    async_id text PRIMARY KEY,
    url text NOT NULL,
    done integer NOT NULL DEFAULT 0
);
CREATE TABLE bench_result (
    async_id text NOT NULL,
    idx integer NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (async_id, idx)
);
"""
FAN_IN = """
WITH stored AS (
    INSERT INTO bench_result (async_id, idx, body) VALUES (%(id)s, %(idx)s, %(body)s)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE bench_batch SET done = done + (SELECT count(*) FROM stored)
WHERE async_id = %(id)s
RETURNING done, (SELECT count(*) FROM stored) AS fresh
"""


def _connector() -> PsycopgConnector:
    options: dict[str, Any] = {"conninfo": PG_URL, "json_dumps": orjson.dumps, "json_loads": orjson.loads}
    if os.environ.get("BENCH_PRO_POOL"):
        options["max_size"] = int(os.environ["BENCH_PRO_POOL"])
    return PsycopgConnector(**options)


app = App(connector=_connector())
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    """One session per process, made in its running event loop."""
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50), timeout=aiohttp.ClientTimeout(total=30), trust_env=False
        )
    return _session


def _pool() -> Any:
    return app.connector.pool  # type: ignore[attr-defined]


@app.task(name="bench_job", pass_context=True)
async def run_job(context: JobContext, async_id: str, index: int, total: int, spec: dict[str, Any]) -> None:
    outcome = orjson.dumps(await common.execute(spec, session()))
    async with _pool().connection() as conn, conn.transaction():
        cursor = await conn.execute(FAN_IN, {"id": async_id, "idx": index, "body": outcome})
        done, fresh = await cursor.fetchone()
        if fresh and done == total:
            await send_callback.configure(connection=conn).defer_async(async_id=async_id)


@app.task(name="bench_callback", pass_context=True)
async def send_callback(context: JobContext, async_id: str) -> None:
    async with _pool().connection() as conn:
        cursor = await conn.execute("SELECT url FROM bench_batch WHERE async_id = %s", (async_id,))
        (url,) = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT body FROM bench_result WHERE async_id = %s ORDER BY idx", (async_id,)
        )
        results = b",".join(bytes(body) for (body,) in await cursor.fetchall())
    body = b'{"asyncId":' + orjson.dumps(async_id) + b',"results":[' + results + b"]}"
    async with session().post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
        await answer.read()


# the API side -------------------------------------------------------------------------------------


async def _open() -> None:
    await app.open_async()


async def close_session() -> None:
    global _session
    if _session is not None:
        await _session.close()
        _session = None


async def _close() -> None:
    await close_session()
    await app.close_async()


async def dispatch(async_id: str, batch_jobs: list[dict[str, Any]], callback_url: str) -> None:
    total = len(batch_jobs)
    arguments = [
        {"async_id": async_id, "index": index, "total": total, "spec": spec}
        for index, spec in enumerate(batch_jobs)
    ]
    async with _pool().connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO bench_batch (async_id, url) VALUES (%s, %s)", (async_id, callback_url)
        )
        await run_job.configure(connection=conn).batch_defer_async(*arguments)


asgi = common.endpoint(dispatch, on_startup=[_open], on_shutdown=[_close])


# the schema ----------------------------------------------------------------------------------


async def migrate() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        async with _pool().connection() as conn:
            await conn.execute(TABLES)
