"""batchgate as any number of API and worker processes, each in a CPU-quota cgroup if asked.

A Deployment is the BG-S / BG-P system of systems/batchgate.py (its probe, PostgreSQL database
per start and clean-up) with more shapes: one `batchgate serve` (API, worker and callbacks: the
SQLite deployment), or `apis` `batchgate serve --no-worker` and `workers` `batchgate worker` processes on
one PostgreSQL database (README "Scaling out"). Every process gets batchgate's defaults plus
`--callback-allow 127.0.0.1 --log-level warning --app ...` and the extra options given, and, with
`cgroups`, a cgroup of its own, entered before it execs, whose quota (`Quotas`: a share of one core,
None or 0 for no limit) applies once every process is ready: starting is not what is measured, and
a Python process importing batchgate at 20 % of a core takes seconds. Workers can be stopped and
let go (SIGSTOP / SIGCONT), to load a queue before they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
from bench.suite import infra, procs
from bench.suite.cgroups import CpuCgroups, CpuGroup
from bench.suite.systems.base import Env
from bench.suite.systems.batchgate import BatchgateSystem

APP = "bench.suite.cpu_actions:app"
LISTEN_APPLICATION = "batchgate-listen"  # the application_name of a worker's LISTEN connection
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Quotas:
    api_pct: float | None = None
    worker_pct: float | None = None

    def of(self, role: str) -> float | None:
        return self.worker_pct if role.startswith("worker") else self.api_pct


def quota_text(pct: float | None) -> str:
    return "no limit" if not pct else f"{pct:g} %"


class Deployment(BatchgateSystem):
    def __init__(
        self,
        system_id: str,
        *,
        database: str,
        apis: int = 1,
        workers: int = 0,
        app: str = APP,
        extra_args: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        cgroups: CpuCgroups | None = None,
        quotas: Quotas = Quotas(),
    ) -> None:
        if workers == 0 and apis != 1:
            raise ValueError("without worker processes there is one `batchgate serve`")
        super().__init__(system_id, database=database, workers=workers)
        self.apis = apis
        self.app = app
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.cgroups = cgroups
        self.quotas = quotas
        self.urls: list[str] = []
        self.groups: dict[str, CpuGroup] = {}

    @property
    def label(self) -> str:
        if self.workers == 0:
            return f"1 `serve` on {self.database}" + self._quota_of("serve")
        apis = f"{self.apis} API{'s' if self.apis > 1 else ''}{self._quota_of('api', self.apis)}"
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return f"{apis} + {workers}{self._quota_of('worker', self.workers)}"

    def _quota_of(self, role: str, count: int = 1) -> str:
        if self.cgroups is None:
            return ""
        return f" ({quota_text(self.quotas.of(role))}{' each' if count > 1 else ''})"

    @property
    def worker_roles(self) -> list[str]:
        return [role for role in self.procs if role.startswith("worker")]

    def pids(self) -> dict[str, int]:
        return {role: proc.pid for role, proc in self.procs.items()}

    async def start(self, env: Env) -> None:
        self.starts += 1
        if self.database == "sqlite":
            self.db = f"sqlite:///{env.work_dir / f'{self.id}-{self.starts}.db'}"
        else:
            self.db = await infra.pg_create(env.infra.pg_url, "bench_scale")
        created = await asyncio.to_thread(
            procs.run, [procs.BATCHGATE, "keys", "create", "--db", self.db, "--name", "bench", "--json"]
        )
        key = orjson.loads(created)
        self.key, self.secret = key["key"], key["secret"]
        common = ["--db", self.db, "--callback-allow", "127.0.0.1", "--log-level", "warning"]
        common += ["--app", self.app, *self.extra_args]
        self.urls = []
        for n in range(1, self.apis + 1):
            port = procs.free_port()
            self.urls.append(f"http://127.0.0.1:{port}")
            serve = [procs.BATCHGATE, "serve", "--port", str(port), *common]
            if self.workers == 0:
                self._spawn_in_group(env, "serve", serve)
            else:
                self._spawn_in_group(env, f"api{n}", [*serve, "--no-worker"])
        for n in range(1, self.workers + 1):
            self._spawn_in_group(env, f"worker{n}", [procs.BATCHGATE, "worker", *common])
        self.url = self.urls[0]
        apis = [role for role in self.procs if not role.startswith("worker")]
        await asyncio.gather(
            *(self._wait_http(role, url + "/healthz") for role, url in zip(apis, self.urls, strict=True))
        )
        if self.workers:
            await self._wait_listening(env)
        for group in self.groups.values():
            group.apply()

    def _spawn_in_group(self, env: Env, role: str, argv: list[str]) -> None:
        if self.cgroups is not None:
            group = self.cgroups.create(f"{self.id}-{self.starts}-{role}", self.quotas.of(role), limit=False)
            self.groups[role] = group
            argv = group.wrap(argv)
        self._spawn(env, role, argv, {"BENCH_STUB_URL": env.stub_url, **self.extra_env})

    async def _wait_listening(self, env: Env) -> None:
        """Until every worker has its LISTEN connection: it is then woken by new batches."""
        name = self.db.rpartition("/")[2]
        deadline = time.monotonic() + READY_TIMEOUT_S
        conn = await asyncpg.connect(env.infra.pg_url)
        try:
            while True:
                listening = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                    name,
                    LISTEN_APPLICATION,
                )
                if listening >= self.workers:
                    return
                if (dead := self.dead()) is not None:
                    raise procs.StartError(dead)
                if time.monotonic() > deadline:
                    raise procs.StartError(f"{listening} of {self.workers} workers listening after 60 s")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def freeze_workers(self) -> None:
        """Stops every worker process where it is (SIGSTOP to its process group)."""
        self._signal_workers(signal.SIGSTOP)

    def thaw_workers(self) -> None:
        self._signal_workers(signal.SIGCONT)

    def _signal_workers(self, signum: int) -> None:
        for role in self.worker_roles:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[role].pid, signum)

    def throttling(self) -> dict[str, dict[str, float]]:
        return {role: group.throttling() for role, group in self.groups.items()}

    async def stop(self, env: Env) -> None:
        self.thaw_workers()  # a stopped process would keep its SIGTERM pending
        try:
            await super().stop(env)
        finally:
            if self.cgroups is not None:
                for group in self.groups.values():
                    self.cgroups.remove(group.path.name)
            self.groups.clear()

    def settings(self) -> dict[str, Any]:
        found = super().settings()
        roles = ["serve"] if self.workers == 0 else [f"api{n}" for n in range(1, self.apis + 1)]
        roles += [f"worker{n}" for n in range(1, self.workers + 1)]
        processes = {
            role: (
                "serve" if self.workers == 0 else "serve --no-worker" if role.startswith("api") else "worker"
            )
            for role in roles
        }
        found.update(
            label=self.label,
            processes=[f"{role}: batchgate {command}" for role, command in processes.items()],
            options="defaults, plus --callback-allow 127.0.0.1 --log-level warning"
            + (f" {' '.join(self.extra_args)}" if self.extra_args else ""),
            app=self.app,
            cpu_quota_pct={role: self.quotas.of(role) for role in roles} if self.cgroups else None,
        )
        for name in ("max_batches_per_worker", "run_options", "features"):  # bench/run's systems only
            found.pop(name, None)
        return found
