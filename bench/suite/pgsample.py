"""What PostgreSQL was doing during a measurement, to profile it.

Always: the run database's `pg_stat_database` counters before and after (commits, rows written,
blocks read), and the CPU time of the server processes serving it. With `--pg-sample`: a sampler on
its own connection to the run's database reads `pg_stat_activity` and `pg_locks` every
`interval_s` and counts, over the samples, what each busy batchgate backend was waiting on (no
wait event: running on a CPU, or queued for one), which statements were busy, and which locks were
waited for. Counts of several repetitions add up (`merge`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import asyncpg  # type: ignore[import-untyped]

TOP = 8
STAT_FIELDS = (
    "xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched",
    "blks_read", "blks_hit", "temp_bytes", "deadlocks",
)  # fmt: skip
ACTIVITY = """
SELECT application_name, state, wait_event_type, wait_event, left(query, 600) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""
# The lock every committing transaction that sent a NOTIFY takes, one at a time (PreCommit_Notify):
# an "object" lock on pg_database's class, object 0, shared (database 0).
LOCKS = """
SELECT l.locktype, l.mode, l.granted,
       CASE WHEN l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.objid = 0
            THEN 'NOTIFY queue' ELSE coalesce(c.relname, l.locktype) END AS what
FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
WHERE l.pid <> pg_backend_pid()
  AND (l.database IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
       OR l.database IS NULL)
"""
PROFILING_EXTENSIONS = ("pg_stat_statements", "auto_explain")


async def db_stats(url: str) -> dict[str, int]:
    """The run database's cumulative counters (PostgreSQL flushes them about once a second)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow("SELECT * FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()
    return {name: int(row[name] or 0) for name in STAT_FIELDS} if row else {}


def stats_delta(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, Any]:
    found: dict[str, Any] = {name: after.get(name, 0) - before.get(name, 0) for name in STAT_FIELDS}
    found["commits_per_s"] = round(found["xact_commit"] / seconds, 1) if seconds > 0 else None
    return found


async def profiling_hints(admin_url: str) -> dict[str, Any]:
    """Whether the statement-level profilers are available and loaded on this server."""
    conn = await asyncpg.connect(admin_url)
    try:
        preload = await conn.fetchval("SHOW shared_preload_libraries")
        available = {
            row["name"]
            for row in await conn.fetch(
                "SELECT name FROM pg_available_extensions WHERE name = any($1::text[])",
                list(PROFILING_EXTENSIONS),
            )
        }
    finally:
        await conn.close()
    loaded = [name for name in PROFILING_EXTENSIONS if name in (preload or "")]
    return {"shared_preload_libraries": preload, "available": sorted(available), "loaded": loaded}


def statement(query: str | None, chars: int = 70) -> str:
    """The start of a statement, without its leading comments, on one line."""
    lines = [line for line in (query or "").splitlines() if not line.strip().startswith("--")]
    return " ".join(" ".join(lines).split())[:chars] or "?"


class PgSampler:
    def __init__(self, url: str, interval_s: float = 0.1) -> None:
        self.url = url
        self.interval_s = interval_s
        self.samples = 0
        self.busy = 0  # backend-samples not idle
        self.waits: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.states: Counter[str] = Counter()
        self.locks_held: Counter[str] = Counter()
        self.lock_waits: Counter[str] = Counter()
        self.samples_with_lock_waits = 0
        self.sample_ms: list[float] = []
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.url, server_settings={"application_name": "bench-pgsample"})
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
        return self.summary()

    async def _loop(self) -> None:
        while True:
            started = time.perf_counter()
            with contextlib.suppress(asyncpg.PostgresError, OSError):  # a lost sample stops nothing
                await self._sample()
            self.sample_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(max(0.0, self.interval_s - (time.perf_counter() - started)))

    async def _sample(self) -> None:
        activity = await self._conn.fetch(ACTIVITY)
        locks = await self._conn.fetch(LOCKS)
        self.samples += 1
        for row in activity:
            state = row["state"] or "?"
            self.states[f"{row['application_name'] or '?'}: {state}"] += 1
            if state == "idle":
                continue
            self.busy += 1
            wait = f"{row['wait_event_type']}:{row['wait_event']}" if row["wait_event_type"] else "CPU"
            self.waits[wait] += 1
            self.queries[statement(row["query"])] += 1
        waiting = False
        for row in locks:
            key = f"{row['what']} {row['mode']}"
            if row["granted"]:
                self.locks_held[key] += 1
            else:
                self.lock_waits[f"{row['locktype']} {key}"] += 1
                waiting = True
        self.samples_with_lock_waits += waiting

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "interval_s": self.interval_s,
            "busy_backend_samples": self.busy,
            "samples_with_lock_waits": self.samples_with_lock_waits,
            "waits": dict(self.waits.most_common()),
            "queries": dict(self.queries.most_common(TOP)),
            "states": dict(self.states.most_common()),
            "locks_held": dict(self.locks_held.most_common(TOP)),
            "lock_waits": dict(self.lock_waits.most_common(TOP)),
            "sample_ms_max": round(max(self.sample_ms, default=0.0), 1),
        }


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Several measurements' samples as one: counts add up."""
    if not summaries:
        return None
    total: dict[str, Any] = {"samples": 0, "busy_backend_samples": 0, "samples_with_lock_waits": 0}
    counters: dict[str, Counter[str]] = {}
    for summary in summaries:
        for name, value in summary.items():
            if isinstance(value, dict):
                counters.setdefault(name, Counter()).update(value)
            elif name in total:
                total[name] += value
    for name, counter in counters.items():
        total[name] = dict(counter.most_common(None if name in ("waits", "states") else TOP))
    return total


def top_shares(counts: dict[str, int], total: int, limit: int = 4) -> str:
    """'CPU 61 %, IO:WALSync 22 %, ...' of the busiest entries."""
    if not total:
        return "-"
    ordered = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return ", ".join(f"{name} {100 * count / total:.0f} %" for name, count in ordered)
