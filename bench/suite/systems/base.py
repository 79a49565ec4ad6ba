"""What every system under test offers the runner: start with fresh state, a submit URL and a key,
its processes for the sampler, stop."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.suite import procs
from bench.suite.infra import Infra
from bench.suite.sampler import Group


@dataclass(frozen=True)
class Env:
    """What the harness provides to every system."""

    work_dir: Path  # databases and logs of this harness run
    infra: Infra
    stub_url: str  # the upstream stub the http jobs call
    gateway_config: bool  # `batchgate serve --config` exists: http jobs use batchgate's gateway mode
    key: str  # the key and secret the alternatives' endpoints accept
    secret: str

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"


class System(ABC):
    family: str = ""  # batchgate | celery | arq

    def __init__(self, system_id: str, *, run_options: dict[str, Any] | None = None) -> None:
        self.id = system_id
        # fields added to the end of this system's `batch.run` bodies (BG-SC: {"concurrency": 50})
        self.run_options: dict[str, Any] = dict(run_options or {})
        self.procs: dict[str, procs.Proc] = {}
        self.url = ""
        self.key = ""
        self.secret = ""
        self.starts = 0

    @property
    @abstractmethod
    def label(self) -> str: ...

    @abstractmethod
    async def problem(self, env: Env) -> str | None:
        """Why this system cannot run here (a missing package, an unreachable server), or None."""

    @abstractmethod
    async def start(self, env: Env) -> None:
        """Starts its processes on fresh state; `url`, `key` and `secret` are then set."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every setting that differs from a bare start, and its durability class."""

    async def infra_groups(self, env: Env) -> dict[str, Group]:
        """The infrastructure processes to sample (Redis, PostgreSQL), once the system is warm."""
        return {}

    async def scrape(self) -> dict[str, Any] | None:
        """The system's own metrics at the end of a cell (a few counters), or None when it has none."""
        return None

    def dead(self) -> str | None:
        """Which of its processes has exited, with the end of its log; None while all run."""
        for role, proc in self.procs.items():
            if not proc.alive():
                return f"{role} exited with {proc.popen.returncode}: {proc.tail(1500)}"
        return None

    def service_group(self) -> Group:
        return Group({role: proc.pid for role, proc in self.procs.items()})

    async def stop(self, env: Env) -> None:
        await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in self.procs.values()))
        self.procs.clear()

    async def _wait_http(self, role: str, url: str, limit_s: float = 60.0) -> None:
        await asyncio.to_thread(procs.wait_until, self.procs[role], procs.http_answers(url), limit_s)

    def _spawn(self, env: Env, role: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.procs[role] = procs.spawn(f"{self.id}-{self.starts}-{role}", argv, env.log_dir, extra_env)
