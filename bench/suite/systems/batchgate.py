"""batchgate, started from its installed command at its defaults, on SQLite or PostgreSQL.

BG-S is one `batchgate serve` process (API, worker and callbacks in one, the default deployment)
on a fresh SQLite file. BG-P1 and BG-P2 are one `batchgate serve --no-worker` API process and one
or two `batchgate worker` processes on a fresh PostgreSQL database; with two workers each runs at
most 25 batches at once, so that no system has more than 50 jobs in flight (BENCH.md, fairness).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from bench.suite import infra, procs
from bench.suite.sampler import Group
from bench.suite.systems.base import Env, System

MAX_IN_FLIGHT = 50
APP_WITH_FORWARDER = "bench.suite.actions:app"
APP_CORE = "bench.suite.actions:core"


def gateway_config_toml(stub_url: str) -> str:
    """batchgate.toml forwarding the `stub` namespace to the upstream stub (gateway mode)."""
    return (
        "[upstreams.stub]\n"
        f'base_url = "{stub_url}"\n'
        'namespaces = ["stub"]\n'
        'key = "bench"\n'
        'secret = "bench"\n'
        f"max_concurrency = {MAX_IN_FLIGHT}\n"
    )


def has_config_option() -> bool:
    """Whether the installed batchgate has gateway mode's `serve --config`."""
    try:
        return "--config" in procs.run([procs.BATCHGATE, "serve", "--help"], timeout=60)
    except (procs.StartError, OSError):
        return False


class BatchgateSystem(System):
    family = "batchgate"

    def __init__(self, system_id: str, *, database: str, workers: int) -> None:
        super().__init__(system_id)
        self.database = database  # sqlite | postgres
        self.workers = workers  # 0: the worker runs inside `serve`
        self.db = ""
        self._probed: str | None = None
        self._probe_done = False
        self._pg_info: dict[str, Any] = {}

    @property
    def label(self) -> str:
        if self.workers == 0:
            return f"batchgate on {self.database}, 1 process"
        return f"batchgate on {self.database}, 1 API + {self.workers} worker{'s' if self.workers > 1 else ''}"

    async def problem(self, env: Env) -> str | None:
        if self.database == "sqlite":
            return None
        if not self._probe_done:
            self._probe_done = True
            self._probed = await self._probe(env)
        return self._probed

    async def _probe(self, env: Env) -> str | None:
        """Can batchgate migrate a fresh PostgreSQL database? (The backend is new.)"""
        found = await infra.pg_problem(env.infra.pg_url)
        if found:
            return found
        url = await infra.pg_create(env.infra.pg_url, "bench_probe")
        try:
            await asyncio.to_thread(procs.run, [procs.BATCHGATE, "migrate", "--db", url], timeout=120)
            self._pg_info = await infra.pg_info(env.infra.pg_url)
        except procs.StartError as exc:
            return f"batchgate cannot use PostgreSQL here yet: {exc}"
        finally:
            await infra.pg_drop(env.infra.pg_url, url)
        return None

    async def start(self, env: Env) -> None:
        self.starts += 1
        if self.database == "sqlite":
            self.db = f"sqlite:///{env.work_dir / f'{self.id}-{self.starts}.db'}"
        else:
            self.db = await infra.pg_create(env.infra.pg_url, "bench_bg")
        created = await asyncio.to_thread(
            procs.run, [procs.BATCHGATE, "keys", "create", "--db", self.db, "--name", "bench", "--json"]
        )
        key = orjson.loads(created)
        self.key, self.secret = key["key"], key["secret"]
        common = ["--db", self.db, "--callback-allow", "127.0.0.1", "--log-level", "warning"]
        if env.gateway_config:
            config = env.work_dir / "batchgate.toml"
            config.write_text(gateway_config_toml(env.stub_url))
            common += ["--app", APP_CORE, "--config", str(config)]
        else:
            common += ["--app", APP_WITH_FORWARDER]
        extra_env = {"BENCH_STUB_URL": env.stub_url}
        port = procs.free_port()
        self.url = f"http://127.0.0.1:{port}"
        serve = [procs.BATCHGATE, "serve", "--port", str(port), *common]
        if self.workers == 0:
            self._spawn(env, "serve", serve, extra_env)
        else:
            self._spawn(env, "api", [*serve, "--no-worker"], extra_env)
            per_worker = str(MAX_IN_FLIGHT // self.workers)
            for n in range(1, self.workers + 1):
                argv = [procs.BATCHGATE, "worker", *common, "--max-batches", per_worker]
                self._spawn(env, f"worker{n}", argv, extra_env)
        await self._wait_http("serve" if self.workers == 0 else "api", self.url + "/healthz")

    async def stop(self, env: Env) -> None:
        await super().stop(env)
        if self.database == "postgres" and self.db:
            await infra.pg_drop(env.infra.pg_url, self.db)

    async def infra_groups(self, env: Env) -> dict[str, Group]:
        if self.database != "postgres":
            return {}
        pids = await infra.pg_pids(env.infra.pg_url, self.db)
        return {"postgres": Group({f"pg{pid}": pid for pid in pids}, descendants=False, pss=True)}

    def settings(self) -> dict[str, Any]:
        if self.database == "sqlite":
            durability = "SQLite WAL, synchronous=FULL: a batch is on disk before it is acknowledged"
        else:
            durability = (
                f"PostgreSQL synchronous_commit={self._pg_info.get('synchronous_commit', '?')}, "
                f"fsync={self._pg_info.get('fsync', '?')}: committed before it is acknowledged"
            )
        processes = ["serve"] if self.workers == 0 else ["serve --no-worker"] + ["worker"] * self.workers
        return {
            "label": self.label,
            "processes": processes,
            "max_batches_per_worker": MAX_IN_FLIGHT // max(self.workers, 1),
            "options": "defaults, plus --callback-allow 127.0.0.1 --log-level warning",
            "durability": durability,
            "postgres": self._pg_info or None,
        }
