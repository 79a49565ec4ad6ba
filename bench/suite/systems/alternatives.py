"""Celery and arq behind the same small ASGI endpoint (alt/common.py), on the shared Redis.

Each runs one API process (uvicorn with httptools and uvloop) and one worker process; Celery's
default prefork pool has one child per core (2 here). Fresh state is a FLUSHDB of the benchmark's
own Redis database. The -TF variants run the tuned setting against Redis with `appendonly yes,
appendfsync always` (set for the run, then restored), batchgate's durability class.
"""

from __future__ import annotations

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
        api = [
            procs.PYTHON, "-m", "uvicorn", self.api_app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        self._spawn(env, "api", api, extra_env)
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
