"""Celery, arq and SAQ on the shared Redis, and procrastinate on PostgreSQL, all behind the same
small ASGI endpoint (alt/common.py).

Each runs one API process (uvicorn with httptools and uvloop) and its workers: one process for
Celery (whose default prefork pool has one child per core, 2 here) and arq; one for SAQ and
procrastinate at their defaults, two when tuned (BENCH.md allows 2 worker processes; each then
runs 25 jobs at once, so that no system has more than 50 in flight). Fresh state is a FLUSHDB of
the benchmark's own Redis database, or a new PostgreSQL database for procrastinate (dropped
afterwards). The -TF variants run the tuned setting against Redis with `appendonly yes,
appendfsync always` (set for the run, then restored), batchgate's durability class.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import Any

from bench.suite import infra, procs
from bench.suite.sampler import Group
from bench.suite.systems.base import Env, System

FSYNC = {"appendonly": "yes", "appendfsync": "always"}
CELERY_TUNED = [
    "-P", "threads", "-c", "50", "--prefetch-multiplier", "16", "-l", "WARNING",
    "--without-gossip", "--without-mingle", "--without-heartbeat",
]  # fmt: skip
# procrastinate's worker CLI options (`procrastinate worker --help`), one set per worker process;
# the connection pool's size is the connector's `max_size` (BENCH_PRO_POOL)
PROCRASTINATE_TUNED = [
    "--log-level", "warning", "worker", "--concurrency", "25", "--delete-jobs", "successful",
    "--fetch-job-polling-interval", "1",
]  # fmt: skip
PROCRASTINATE_TUNED_WORKERS = 2
PROCRASTINATE_TUNED_POOL = 15


def api_argv(app: str, port: int) -> list[str]:
    """The alternatives' API process: uvicorn with httptools and uvloop, warnings only."""
    return [
        procs.PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


class RedisSystem(System):
    module = ""  # the package the system needs
    api_app = ""

    def __init__(self, system_id: str, *, tuned: bool, fsync: bool = False) -> None:
        super().__init__(system_id)
        self.tuned = tuned
        self.fsync = fsync
        self._restore: dict[str, str] = {}
        self._redis: dict[str, Any] = {}

    async def problem(self, env: Env) -> str | None:
        if importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed (pip install -e '.[bench]')"
        return await infra.redis_problem(env.infra.redis_url)

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    async def start(self, env: Env) -> None:
        self.starts += 1
        await infra.redis_flush(env.infra.redis_url)
        if self.fsync:
            self._restore = await infra.redis_config(env.infra.redis_url, FSYNC)
        self._redis = await infra.redis_info(env.infra.redis_url)
        self.key, self.secret = env.key, env.secret
        extra_env = {
            "BENCH_REDIS_URL": env.infra.redis_url,
            "BENCH_STUB_URL": env.stub_url,
            "BENCH_KEY": env.key,
            "BENCH_SECRET": env.secret,
        }
        port = procs.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(env, "api", api_argv(self.api_app, port), extra_env)
        self._spawn(env, "worker", self.worker_argv(), extra_env)
        await self._wait_http("api", self.url + "/healthz")

    async def stop(self, env: Env) -> None:
        await super().stop(env)
        if self._restore:
            await infra.redis_config(env.infra.redis_url, self._restore)
            self._restore = {}

    async def infra_groups(self, env: Env) -> dict[str, Group]:
        pid = self._redis.get("pid")
        return {"redis": Group({"redis": int(pid)}, descendants=False)} if pid else {}

    def durability(self) -> str:
        return (
            f"Redis appendonly={self._redis.get('appendonly', '?')}, "
            f"appendfsync={self._redis.get('appendfsync', '?')}, save={self._redis.get('save', '?')!r}"
        )


class CelerySystem(RedisSystem):
    family = "celery"
    module = "celery"
    api_app = "bench.suite.alt.celery_app:asgi"

    @property
    def label(self) -> str:
        kind = "tuned" if self.tuned else "defaults"
        return f"Celery + Redis, chord, {kind}" + (", Redis fsync always" if self.fsync else "")

    def worker_argv(self) -> list[str]:
        argv = [procs.PYTHON, "-m", "celery", "-A", "bench.suite.alt.celery_app", "worker"]
        return argv + (CELERY_TUNED if self.tuned else [])

    def settings(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "processes": [
                "uvicorn API",
                "celery worker" + (" (threads, 50)" if self.tuned else " (prefork, 2)"),
            ],
            "worker_options": " ".join(CELERY_TUNED) if self.tuned else "defaults",
            "serializer": "orjson (kombu serializer), for message bodies and results",
            "durability": self.durability(),
            "redis": self._redis or None,
        }


class ArqSystem(RedisSystem):
    family = "arq"
    module = "arq"
    api_app = "bench.suite.alt.arq_app:asgi"

    @property
    def label(self) -> str:
        kind = "tuned" if self.tuned else "defaults"
        return f"arq + Redis, counter, {kind}" + (", Redis fsync always" if self.fsync else "")

    def worker_argv(self) -> list[str]:
        return [procs.PYTHON, "-m", "bench.suite.alt.arq_app", *(["--tuned"] if self.tuned else [])]

    def settings(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "processes": ["uvicorn API", "arq worker (uvloop)"],
            "worker_options": (
                "max_jobs=50, poll_delay=0.05, log level WARNING"
                if self.tuned
                else "defaults: max_jobs=10, poll_delay=0.5, CLI logging (INFO)"
            ),
            "serializer": "arq's default (pickle) for jobs; orjson for results and callbacks",
            "durability": self.durability(),
            "redis": self._redis or None,
            "python": sys.version.split()[0],
        }


class SaqSystem(RedisSystem):
    family = "saq"
    module = "saq"
    api_app = "bench.suite.alt.saq_app:asgi"

    @property
    def label(self) -> str:
        kind = "tuned" if self.tuned else "defaults"
        return f"SAQ + Redis, counter, {kind}" + (", Redis fsync always" if self.fsync else "")

    def worker_argv(self) -> list[str]:
        # one process: SAQ's runner, which forks the second worker process itself when tuned
        return [procs.PYTHON, "-m", "bench.suite.alt.saq_app", *(["--tuned"] if self.tuned else [])]

    def settings(self) -> dict[str, Any]:
        from bench.suite.alt import saq_app

        found = saq_app.TUNED if self.tuned else saq_app.DEFAULTS
        workers, concurrency = found["workers"], found["concurrency"]
        return {
            "label": self.label,
            "processes": ["uvicorn API", f"saq worker (uvloop) x {workers}, concurrency {concurrency} each"],
            "worker_options": (
                f"--workers {workers}, concurrency={concurrency} (per process)"
                if self.tuned
                else f"defaults: 1 process, concurrency={concurrency}, CLI logging (WARNING)"
            ),
            "serializer": "orjson (the queue's dump/load) for jobs; orjson for results and callbacks",
            "durability": self.durability(),
            "redis": self._redis or None,
            "python": sys.version.split()[0],
        }


class ProcrastinateSystem(System):
    """procrastinate on a fresh PostgreSQL database: one API process and one worker process at its
    defaults, two when tuned."""

    family = "procrastinate"
    app_module = "bench.suite.alt.procrastinate_app"
    cli_module = "bench.suite.alt.procrastinate_cli"

    def __init__(self, system_id: str, *, tuned: bool) -> None:
        super().__init__(system_id)
        self.tuned = tuned
        self.db = ""
        self._pg_info: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return f"procrastinate + PostgreSQL, counter row, {'tuned' if self.tuned else 'defaults'}"

    @property
    def workers(self) -> int:
        return PROCRASTINATE_TUNED_WORKERS if self.tuned else 1

    async def problem(self, env: Env) -> str | None:
        for module in ("procrastinate", "psycopg"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[bench]')"
        return await infra.pg_problem(env.infra.pg_url)

    def worker_argv(self) -> list[str]:
        return [procs.PYTHON, "-m", self.cli_module, *(PROCRASTINATE_TUNED if self.tuned else ["worker"])]

    async def start(self, env: Env) -> None:
        self.starts += 1
        self.db = await infra.pg_create(env.infra.pg_url, "bench_pro")
        if not self._pg_info:
            self._pg_info = await infra.pg_info(env.infra.pg_url)
        self.key, self.secret = env.key, env.secret
        extra_env = {
            "BENCH_PG_URL": self.db,
            "BENCH_STUB_URL": env.stub_url,
            "BENCH_KEY": env.key,
            "BENCH_SECRET": env.secret,
        }
        if self.tuned:
            extra_env["BENCH_PRO_POOL"] = str(PROCRASTINATE_TUNED_POOL)
        await asyncio.to_thread(
            procs.run, [procs.PYTHON, "-m", self.cli_module, "migrate"], timeout=120, env=extra_env
        )
        port = procs.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(env, "api", api_argv(f"{self.app_module}:asgi", port), extra_env)
        for n in range(1, self.workers + 1):
            self._spawn(env, f"worker{n}", self.worker_argv(), extra_env)
        await self._wait_http("api", self.url + "/healthz")

    async def stop(self, env: Env) -> None:
        await super().stop(env)
        if self.db:
            await infra.pg_drop(env.infra.pg_url, self.db)
            self.db = ""

    async def infra_groups(self, env: Env) -> dict[str, Group]:
        pids = await infra.pg_pids(env.infra.pg_url, self.db)
        return {"postgres": Group({f"pg{pid}": pid for pid in pids}, descendants=False, pss=True)}

    def settings(self) -> dict[str, Any]:
        processes = ["uvicorn API"] + ["procrastinate worker (uvloop)"] * self.workers
        if self.tuned:
            options = (
                f"{self.workers} workers, each `procrastinate {' '.join(PROCRASTINATE_TUNED)}`; "
                f"connection pool max_size={PROCRASTINATE_TUNED_POOL} per process"
            )
        else:
            options = (
                "defaults: `worker` (concurrency 1, LISTEN/NOTIFY with a 5 s polling fallback, "
                "jobs kept, INFO logging), connection pool of 4"
            )
        return {
            "label": self.label,
            "processes": processes,
            "worker_options": options,
            "serializer": "orjson (the connector's json_dumps/json_loads) for job arguments; "
            "orjson bytes for results and callbacks",
            "durability": (
                f"PostgreSQL synchronous_commit={self._pg_info.get('synchronous_commit', '?')}, "
                f"fsync={self._pg_info.get('fsync', '?')}: a batch's jobs are committed before it is "
                "acknowledged"
            ),
            "postgres": self._pg_info or None,
            "python": sys.version.split()[0],
        }
