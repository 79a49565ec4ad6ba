"""batchgate, started from its installed command at its defaults, on SQLite or PostgreSQL.

BG-S is one `batchgate serve` process (API, worker and callbacks in one, the default deployment)
on a fresh SQLite file. BG-SC is the same whose `run` bodies ask for `"concurrency": 50` (a batch's
jobs run 50 at a time, protocol.md section 7.3) and whose worker runs one batch at a time
(`--max-batches 1`), so that it too has at most 50 jobs in flight. BG-SC10 asks for
`"concurrency": 10` at batchgate's default `--max-batches 50`: the only system allowed more than 50
jobs in flight (up to 500), compared with BG-S only, to show what a batch's own concurrency buys
at the same number of batches in flight (issue 12). BG-P1 and BG-P2 are one
`batchgate serve --no-worker` API process and one or two `batchgate worker` processes on a fresh
PostgreSQL database; with two workers each runs at most 25 batches at once, so that no system has
more than 50 jobs in flight (BENCH.md, fairness).

Every feature is on: replay protection and the per-account quotas are on by default; logs are JSON
lines at batchgate's default level (info: a line per batch accepted, started and finished); every
process has its admin listener on a loopback port, behind an admin token (`serve --admin-port`,
`worker --metrics-port`), whose /metrics the runner scrapes at the end of each cell. One default is
raised, not turned off: the per-account rate limit (1,000 requests/s, a burst of 2,000), which the
`run` measurement (2,000 one-job batches from one account, as fast as they are answered) would
otherwise measure instead of batchgate.

BG-S0 is BG-S with that observability off, to measure what it costs: its metrics are no-ops
(bench/suite/unobserved.py), it logs warnings only, to the console, and it has no admin listener.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import orjson
from bench.suite import infra, procs
from bench.suite.sampler import Group
from bench.suite.systems.base import Env, System

MAX_IN_FLIGHT = 50
DEFAULT_MAX_BATCHES = 50  # batchgate's own default of --max-batches
LOG_LEVEL = "info"  # batchgate's default
RATE_LIMIT = 100_000  # requests/s per account: far above what this machine can send (default 1,000)
# the counters recorded at the end of each cell: name -> (metric, labels that must match)
COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "batches_submitted": ("batchgate_batches_total", {"event": "submitted"}),
    "batches_complete": ("batchgate_batches_total", {"event": "complete"}),
    "jobs_succeeded": ("batchgate_jobs_total", {"outcome": "succeeded"}),
    "callbacks_delivered": ("batchgate_delivery_attempts_total", {"outcome": "delivered"}),
    "http_requests": ("batchgate_http_requests_total", {}),
    "http_429": ("batchgate_http_requests_total", {"status": "429"}),
}
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


def parse_counters(text: str) -> dict[str, float]:
    """COUNTERS' values in a Prometheus text exposition: each the sum of its matching samples."""
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        name, _, rest = sample.partition("{")
        labels = dict(
            (part.split("=", 1)[0], part.split("=", 1)[1].strip('"'))
            for part in rest.rstrip("}").split(",")
            if "=" in part
        )
        for counter, (metric, wanted) in COUNTERS.items():
            if name == metric and all(labels.get(k) == v for k, v in wanted.items()):
                try:
                    found[counter] += float(value)
                except ValueError:
                    continue
    return {name: int(value) if value.is_integer() else value for name, value in found.items()}


class BatchgateSystem(System):
    family = "batchgate"

    def __init__(
        self,
        system_id: str,
        *,
        database: str,
        workers: int,
        concurrency: int = 1,
        observed: bool = True,
        capped: bool = True,
    ) -> None:
        super().__init__(system_id, run_options={"concurrency": concurrency} if concurrency > 1 else None)
        self.database = database  # sqlite | postgres
        self.workers = workers  # 0: the worker runs inside `serve`
        self.concurrency = concurrency  # the `concurrency` of its run bodies (1: batchgate's default)
        self.observed = observed  # False: no metrics, warnings-only text logs, no admin listener
        # batches each worker runs at once: at most MAX_IN_FLIGHT jobs in flight in all, unless
        # uncapped (BG-SC10: batchgate's default number of batches, each `concurrency` jobs at once)
        per_worker = MAX_IN_FLIGHT // (max(workers, 1) * concurrency)
        self.max_batches = max(1, per_worker) if capped else DEFAULT_MAX_BATCHES
        self.admin_token = ""
        self.metrics_urls: dict[str, str] = {}  # role -> its admin listener's /metrics
        self.db = ""
        self._probed: str | None = None
        self._probe_done = False
        self._pg_info: dict[str, Any] = {}

    @property
    def label(self) -> str:
        concurrent = f", concurrency {self.concurrency}" if self.concurrency > 1 else ""
        concurrent += "" if self.observed else ", metrics and info logs off"
        if self.workers == 0:
            return f"batchgate on {self.database}, 1 process{concurrent}"
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return f"batchgate on {self.database}, 1 API + {workers}{concurrent}"

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
        common = ["--db", self.db, "--callback-allow", "127.0.0.1"]
        if self.observed:
            common += ["--log-level", LOG_LEVEL, "--log-format", "json"]
        else:
            common += ["--log-level", "warning", "--log-format", "console"]
        if env.gateway_config:
            config = env.work_dir / "batchgate.toml"
            config.write_text(gateway_config_toml(env.stub_url))
            common += ["--app", APP_CORE, "--config", str(config)]
        else:
            common += ["--app", APP_WITH_FORWARDER]
        if self.max_batches != DEFAULT_MAX_BATCHES:
            common += ["--max-batches", str(self.max_batches)]
        # the admin listeners' token, in the environment rather than on a command line
        self.admin_token = secrets.token_urlsafe(24)
        extra_env = {"BENCH_STUB_URL": env.stub_url, "BATCHGATE_ADMIN_TOKEN": self.admin_token}
        port = procs.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_urls = {}
        api = "serve" if self.workers == 0 else "api"
        # BG-S0's processes run batchgate's command with every metric update a no-op
        program = [procs.BATCHGATE] if self.observed else [procs.PYTHON, "-m", "bench.suite.unobserved"]
        serve = [*program, "serve", "--port", str(port), *common, "--rate-limit", str(RATE_LIMIT)]
        if self.observed:
            admin_port = procs.free_port()
            self.metrics_urls[api] = f"http://127.0.0.1:{admin_port}/metrics"
            serve += ["--admin-port", str(admin_port)]
        if self.workers == 0:
            self._spawn(env, "serve", serve, extra_env)
        else:
            self._spawn(env, "api", [*serve, "--no-worker"], extra_env)
            for n in range(1, self.workers + 1):
                argv = [*program, "worker", *common]
                if self.observed:
                    metrics_port = procs.free_port()
                    self.metrics_urls[f"worker{n}"] = f"http://127.0.0.1:{metrics_port}/metrics"
                    argv += ["--metrics-port", str(metrics_port)]
                self._spawn(env, f"worker{n}", argv, extra_env)
        await self._wait_http(api, self.url + "/healthz")

    async def scrape(self) -> dict[str, Any] | None:
        """Each process's /metrics, once: COUNTERS per process and summed (they count from the
        process's start: from the cell's with fresh state per cell), or why a scrape failed."""
        if not self.metrics_urls:
            return None
        found: dict[str, Any] = {"by_process": {}, "errors": []}
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            for role, url in self.metrics_urls.items():
                try:
                    async with session.get(url, headers=headers) as response:
                        text = await response.text()
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}: {text[:200]}")
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    found["errors"].append(f"{role}: {type(exc).__name__}: {exc}")
                    continue
                found["by_process"][role] = parse_counters(text)
        found["total"] = {
            name: sum(counters[name] for counters in found["by_process"].values()) for name in COUNTERS
        }
        return found

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
        max_batches = f" --max-batches {self.max_batches}" if self.max_batches != DEFAULT_MAX_BATCHES else ""
        return {
            "label": self.label,
            "processes": processes,
            "max_batches_per_worker": self.max_batches,
            "run_options": self.run_options or None,
            "options": (
                (
                    f"defaults, plus --callback-allow 127.0.0.1 --log-format json (level {LOG_LEVEL})"
                    f"{max_batches}, an admin listener (serve --admin-port, worker --metrics-port, "
                    f"admin token), --rate-limit {RATE_LIMIT} (raised from 1000)"
                    if self.observed
                    else f"defaults, plus --callback-allow 127.0.0.1 --log-level warning{max_batches}, "
                    f"--rate-limit {RATE_LIMIT} (raised from 1000), every metric update a no-op"
                )
                + (f"; run bodies add {orjson.dumps(self.run_options).decode()}" if self.run_options else "")
            ),
            "features": (
                "replay protection, per-account quotas (rate limit raised), /metrics, JSON logs"
                if self.observed
                else "replay protection, per-account quotas (rate limit raised); no metrics, no info logs"
            ),
            "durability": durability,
            "postgres": self._pg_info or None,
        }
