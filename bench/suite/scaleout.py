"""bench/scaleout: how batchgate scales out on PostgreSQL when every process has a small CPU share.

Every batchgate process (API and worker) runs in a cgroup of its own with a CPU quota (20 % of
one core by default), as on small hosts or under container limits; PostgreSQL, the load generator
and the callback receiver are not limited. Configurations:

- worker scaling (W1, W2, W4): one `serve --no-worker` API process with a larger share (a full core
  by default), and 1, 2 and 4 `batchgate worker` processes;
- API scaling (A1, A2): 1 and 2 API processes at the quota, beside workers that are not the limit
  (2 with a full core each by default).

Job kinds: noop and io10 (bench/suite/jobs.py) and cpu (bench/suite/cpu_actions.py: a few ms of
CPU per job). Two ways to load work:

- preload: the workers are stopped (SIGSTOP) while every batch is submitted, then let go; jobs/s is
  the drain rate, from letting go to the last callback, and the submit rate is the APIs' alone;
- burst: every batch from 8 connections while the workers run; jobs/s is end to end, from the first
  submit to the last callback.

Every callback goes through the correctness gate (gate.py). The report, bench/results/
scaleout-<UTC>.{md,json}, gives jobs/s per cell (median and range over the repetitions) and the
ratios 2w/1w, 4w/1w and 2api/1api.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.suite import cpu_actions, gate, infra, loadgen, modes, pgsample, procstat
from bench.suite.cgroups import CpuCgroups
from bench.suite.deployment import Deployment, Quotas
from bench.suite.metrics import batch_metrics
from bench.suite.receiver import Receiver
from bench.suite.scaleout_report import markdown, summarize_run
from bench.suite.systems.base import Env
from bench.suite.workload import Workload

log = logging.getLogger("bench")
LOADS = ("preload", "burst")
ALL_KINDS = ("noop", "io10", "cpu")
RELEASE_PAUSE_S = 0.2  # between the last submit answered and letting the workers go


class Batches(Workload):
    """The workload of workload.py, with the `cpu` kind as well."""

    def jobs(self, batch: int) -> list[dict[str, Any]]:
        if self.kind == "cpu":
            return [cpu_actions.job(batch, j) for j in range(self.jobs_per_batch)]
        return super().jobs(batch)


@dataclass(frozen=True)
class Config:
    id: str  # W1, W2, W4 (worker scaling), A1, A2 (API scaling)
    axis: str  # workers | apis
    apis: int
    workers: int
    quotas: Quotas


@dataclass
class ScalePlan:
    mode: str = "full"
    reps: int = 3
    kinds: list[str] = field(default_factory=lambda: list(ALL_KINDS))
    loads: list[str] = field(default_factory=lambda: list(LOADS))
    worker_counts: list[int] = field(default_factory=lambda: [1, 2, 4])
    api_counts: list[int] = field(default_factory=lambda: [1, 2])
    quota_pct: float = 20.0
    api_quota_pct: float = 100.0  # the one API of the worker-scaling cells
    api_cell_workers: int = 2
    api_cell_worker_quota_pct: float = 100.0
    period_us: int = 100_000
    batches: int = 50
    jobs_per_batch: int = 200
    cpu_batches: int = 20
    cpu_jobs_per_batch: int = 50
    cpu_ms: float = cpu_actions.CPU_MS_DEFAULT
    batchgate_args: list[str] = field(default_factory=list)
    pg_sample: bool = False
    pg_sample_interval_s: float = 0.1
    stall_s: float = 60.0
    linger_s: float = 0.5
    seed: int = 0

    def size(self, kind: str) -> tuple[int, int]:
        """Batches and jobs per batch of one kind."""
        if kind == "cpu":
            return self.cpu_batches, self.cpu_jobs_per_batch
        return self.batches, self.jobs_per_batch

    def configs(self) -> list[Config]:
        found = [
            Config(f"W{n}", "workers", 1, n, Quotas(self.api_quota_pct, self.quota_pct))
            for n in self.worker_counts
        ]
        found += [
            Config(
                f"A{n}",
                "apis",
                n,
                self.api_cell_workers,
                Quotas(self.quota_pct, self.api_cell_worker_quota_pct),
            )
            for n in self.api_counts
        ]
        return found

    def order(self) -> list[tuple[int, Config]]:
        """Every (repetition, configuration), each repetition's configurations shuffled."""
        rng = random.Random(self.seed)
        found = []
        for rep in range(1, self.reps + 1):
            configs = self.configs()
            rng.shuffle(configs)
            found += [(rep, config) for config in configs]
        return found

    def callback_timeout_s(self, jobs: int) -> float:
        return 120.0 + 0.1 * jobs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scaleout", description=__doc__, formatter_class=Raw)
    parser.add_argument(
        "--quick", action="store_true", help="a short look: 1 repetition, 10 batches (cpu: 8)"
    )
    parser.add_argument("--reps", type=int, help="repetitions (3)")
    parser.add_argument("--kinds", help=f"comma-separated job kinds among {','.join(ALL_KINDS)}")
    parser.add_argument("--loads", help="preload,burst (both)")
    parser.add_argument("--workers", help="worker counts of the worker-scaling cells (1,2,4)")
    parser.add_argument("--apis", help="API counts of the API-scaling cells (1,2); empty: none")
    parser.add_argument("--quota", type=float, help="CPU quota of each limited process, %% of one core (20)")
    parser.add_argument(
        "--api-quota", type=float, help="the API process of the worker-scaling cells, %% (100; 0: no limit)"
    )
    parser.add_argument("--api-cell-workers", type=int, help="workers in the API-scaling cells (2)")
    parser.add_argument("--api-cell-worker-quota", type=float, help="their quota, %% (100; 0: no limit)")
    parser.add_argument("--period-us", type=int, help="the CFS period of the quotas, µs (100000)")
    parser.add_argument("--batches", type=int, help="batches of a noop or io10 cell (50)")
    parser.add_argument("--jobs", type=int, help="jobs per noop or io10 batch (200)")
    parser.add_argument("--cpu-batches", type=int, help="batches of a cpu cell (20)")
    parser.add_argument("--cpu-jobs", type=int, help="jobs per cpu batch (50)")
    parser.add_argument("--cpu-ms", type=float, help="CPU time one cpu job spends, ms (2)")
    parser.add_argument("--pg-sample", action="store_true", help="sample pg_stat_activity and pg_locks")
    parser.add_argument("--pg-sample-interval", type=float, help="seconds between samples (0.1)")
    parser.add_argument("--seed", type=int, help="seed of the shuffled order (random)")
    modes.common_options(parser)
    return parser.parse_args(argv)


class Raw(argparse.RawDescriptionHelpFormatter):
    pass


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def make_plan(args: argparse.Namespace) -> ScalePlan:
    plan = ScalePlan()
    if args.quick:
        plan = ScalePlan(mode="quick", reps=1, batches=10, cpu_batches=8)
    if args.kinds:
        plan.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        if set(plan.kinds) - set(ALL_KINDS):
            raise SystemExit(f"job kinds are {', '.join(ALL_KINDS)}")
    if args.loads:
        plan.loads = [k.strip() for k in args.loads.split(",") if k.strip()]
        if set(plan.loads) - set(LOADS):
            raise SystemExit(f"loads are {', '.join(LOADS)}")
    if args.workers is not None:
        plan.worker_counts = _ints(args.workers)
    if args.apis is not None:
        plan.api_counts = _ints(args.apis)
    overrides = {
        "reps": "reps", "quota": "quota_pct", "api_quota": "api_quota_pct",
        "api_cell_workers": "api_cell_workers", "api_cell_worker_quota": "api_cell_worker_quota_pct",
        "period_us": "period_us", "batches": "batches", "jobs": "jobs_per_batch",
        "cpu_batches": "cpu_batches", "cpu_jobs": "cpu_jobs_per_batch", "cpu_ms": "cpu_ms",
        "pg_sample_interval": "pg_sample_interval_s",
    }  # fmt: skip
    for name, attribute in overrides.items():
        if getattr(args, name) is not None:
            setattr(plan, attribute, getattr(args, name))
    plan.batchgate_args = list(args.batchgate_arg)
    plan.pg_sample = args.pg_sample
    plan.seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    return plan


# one measurement ---------------------------------------------------------------------------------


@dataclass
class Cell:
    rep: int
    config: Config
    kind: str
    load: str

    def record(self) -> dict[str, Any]:
        return {
            "rep": self.rep,
            "config": self.config.id,
            "kind": self.kind,
            "load": self.load,
            "started_at": modes.now(),
            "error": None,
        }

    def failed(self, error: str) -> dict[str, Any]:
        """The record of a cell that could not be measured: the gate voids it, saying why."""
        verdict = gate.Verdict(False, 0, 0, 0, [error], 1)
        return {**self.record(), "error": error, "gate": verdict.to_json(), "metrics": {}}


class Measurer:
    """Measures cells on a started deployment: warm-up, load, callbacks, gate, resources."""

    def __init__(self, plan: ScalePlan, env: Env, receiver: Receiver) -> None:
        self.plan = plan
        self.env = env
        self.receiver = receiver
        self.workloads = {kind: Batches(kind, plan.size(kind)[1], receiver.url) for kind in ALL_KINDS}

    async def measure(self, deployment: Deployment, cell: Cell) -> dict[str, Any]:
        gens = [loadgen.LoadGen(url, deployment.key, deployment.secret) for url in deployment.urls]
        try:
            return {**cell.record(), **await self._measure(deployment, cell, gens)}
        except Exception as exc:
            log.exception("%s %s %s failed", cell.config.id, cell.kind, cell.load)
            return cell.failed(f"{type(exc).__name__}: {exc}")
        finally:
            await asyncio.gather(*(gen.close() for gen in gens))

    async def _measure(
        self, deployment: Deployment, cell: Cell, gens: list[loadgen.LoadGen]
    ) -> dict[str, Any]:
        plan, receiver, workload = self.plan, self.receiver, self.workloads[cell.kind]
        batches, jobs_per_batch = plan.size(cell.kind)
        await modes.warm_up(gens, workload.body, receiver, deployment.dead)
        before = await self._resources(deployment)
        sampler = pgsample.PgSampler(deployment.db, plan.pg_sample_interval_s) if plan.pg_sample else None
        if sampler is not None:
            await sampler.start()
        mark = receiver.mark()
        released = None
        try:
            if cell.load == "preload":
                deployment.freeze_workers()
            submits = await burst_over(gens, list(range(batches)), workload.body)
            if cell.load == "preload":
                await asyncio.sleep(RELEASE_PAUSE_S)
                released = time.perf_counter()
                deployment.thaw_workers()
            accepted = {s.async_id: s.batch for s in submits if s.async_id is not None}
            why = await modes.wait_callbacks(
                receiver,
                set(accepted),
                dead=deployment.dead,
                timeout_s=plan.callback_timeout_s(batches * jobs_per_batch),
                stall_s=plan.stall_s,
            )
            ended = time.perf_counter()
        finally:
            deployment.thaw_workers()
            pg_sample = await sampler.stop() if sampler is not None else None
        after = await self._resources(deployment)
        await asyncio.sleep(plan.linger_s)
        records = receiver.since(mark)
        errors = [f"batch {s.batch}: {s.error}" for s in submits if s.error]
        expected = {b: workload.jobs(b) for b in range(batches)}
        verdict = gate.check(expected, accepted, records, submit_errors=errors)
        modes.stopped_waiting(verdict, why)
        metrics = batch_metrics(submits, records, jobs_per_batch)
        metrics.update(headline(metrics, records, mark_released=released, ok=verdict.ok))
        window = (metrics.get("drain_s") if released else metrics.get("elapsed_s")) or (
            ended - submits[0].start
        )
        return {
            "metrics": metrics,
            "gate": verdict.to_json(),
            "processes": process_usage(before, after, deployment),
            "postgres": {
                **pgsample.stats_delta(before["pg_stats"], after["pg_stats"], window),
                "cpu_s": procstat.cpu_delta(before["pg_cpu"], after["pg_cpu"]),
            },
            "harness_cpu_s": round(after["harness_cpu"] - before["harness_cpu"], 3),
            "pg_sample": pg_sample,
            "ceiling_jobs_per_s": ceiling(cell, plan),
        }

    async def _resources(self, deployment: Deployment) -> dict[str, Any]:
        pg_pids = await infra.pg_pids(self.env.infra.pg_url, deployment.db)
        return {
            "cpu": {role: procstat.cpu_s(pid) for role, pid in deployment.pids().items()},
            "throttling": deployment.throttling(),
            "pg_cpu": procstat.cpu_of(pg_pids),
            "pg_stats": await pgsample.db_stats(deployment.db),
            "harness_cpu": time.process_time(),
        }


async def burst_over(
    gens: list[loadgen.LoadGen], batches: list[int], body: Callable[[int], bytes]
) -> list[loadgen.Submit]:
    """The burst shape of loadgen.py (8 connections), its connections spread over the API processes."""
    if len(gens) == 1:
        return await loadgen.burst(gens[0], batches, body)
    pending = iter(batches)
    done: list[loadgen.Submit] = []

    async def connection(gen: loadgen.LoadGen) -> None:
        for batch in pending:
            done.append(await gen.submit(batch, body(batch)))

    await asyncio.gather(*(connection(gens[c % len(gens)]) for c in range(loadgen.BURST_CONNECTIONS)))
    return done


def headline(
    metrics: dict[str, Any], records: list[Any], *, mark_released: float | None, ok: bool
) -> dict[str, Any]:
    """jobs/s of the cell: the drain rate (let go → last callback) after a preload, else end to end."""
    found: dict[str, Any] = {"e2e_jobs_per_s": metrics.get("jobs_per_s")}
    if mark_released is None:
        found["jobs_per_s"] = metrics.get("jobs_per_s") if ok else None
        return found
    last = max((r.at for r in records if r.async_id is not None), default=None)
    if last is None or not metrics.get("jobs"):
        found["jobs_per_s"] = None
        return found
    drain = last - mark_released
    found["drain_s"] = round(drain, 3)
    found["jobs_per_s"] = round(metrics["jobs"] / drain, 1) if ok and drain > 0 else None
    return found


def process_usage(before: dict[str, Any], after: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """Per process: CPU seconds in the cell, its quota, and how many of its periods hit the quota."""
    found = {}
    for role in deployment.groups:
        quota = deployment.quotas.of(role)
        cpu0, cpu1 = before["cpu"].get(role), after["cpu"].get(role)
        t0, t1 = before["throttling"].get(role) or {}, after["throttling"].get(role) or {}
        periods = t1.get("periods", 0) - t0.get("periods", 0)
        throttled = t1.get("throttled", 0) - t0.get("throttled", 0)
        found[role] = {
            "cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3),
            "quota_pct": quota,
            "periods": periods,
            "throttled_pct": round(100 * throttled / periods, 1) if periods else 0.0,
            "throttled_s": round(t1.get("throttled_s", 0.0) - t0.get("throttled_s", 0.0), 3),
        }
    return found


def ceiling(cell: Cell, plan: ScalePlan) -> float | None:
    """cpu jobs only: what the workers' quotas allow at most, all of them busy."""
    quota = cell.config.quotas.worker_pct
    if cell.kind != "cpu" or not quota:
        return None
    return round(cell.config.workers * quota / 100 * 1000 / plan.cpu_ms, 1)


# the run -----------------------------------------------------------------------------------------


async def run(plan: ScalePlan, args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = modes.WorkDir(args.work_dir, args.keep_work)
    env = modes.make_env(work.path, args.pg_url)
    where = modes.stem(args.out, args.name, "scaleout")
    receiver = Receiver()
    await receiver.start()
    cgroups = None
    try:
        # can batchgate migrate a fresh PostgreSQL database here? (asked once, of BG-P's probe)
        problem = await Deployment("probe", database="postgres", workers=1).problem(env)
        if problem:
            raise SystemExit(f"bench/scaleout needs PostgreSQL: {problem}")
        cgroups, tried = await asyncio.to_thread(CpuCgroups.detect, period_us=plan.period_us)
        for line in tried:
            log.info("cgroups: %s", line)
        if cgroups is None:
            raise SystemExit("no cgroup hierarchy can limit CPU here (root needed):\n" + "\n".join(tried))
        data = {
            "meta": {
                **modes.meta(notes(plan)),
                "cgroups": {**cgroups.describe(), "tried": tried},
                "postgres": await infra.pg_info(args.pg_url),
                "postgres_profiling": await pgsample.profiling_hints(args.pg_url),
                "work_dir": str(work.path),
            },
            "plan": asdict(plan),
            "configs": {},
            "cells": [],
        }
        measurer = Measurer(plan, env, receiver)
        order = plan.order()
        for index, (rep, config) in enumerate(order, start=1):
            log.info("[%d/%d] rep %d %s", index, len(order), rep, config.id)
            data["configs"][config.id] = await run_config(plan, env, measurer, cgroups, rep, config, data)
            data["meta"]["duration_s"] = round(time.monotonic() - started, 1)
            modes.checkpoint(data, where)
        data["meta"]["finished_at"] = modes.now()
        summarize_run(data)
        written = modes.write(data, where, markdown)
        void = [c for c in data["cells"] if not c["gate"]["ok"]]
        work.keep = work.keep or bool(void)
        print(markdown(data))
        for path in written:
            print(f"wrote {path}")
        if void:
            voided = f"{len(void)} of {len(data['cells'])} measurements were VOIDED by the gate"
            print(f"{voided}; logs in {work.path}")
            return 2
        return 0
    finally:
        await receiver.stop()
        if cgroups is not None:
            cgroups.close()
        work.close()


async def run_config(
    plan: ScalePlan,
    env: Env,
    measurer: Measurer,
    cgroups: CpuCgroups,
    rep: int,
    config: Config,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Every kind and load of one configuration on one start (a fresh one after a voided cell)."""
    extra_env = {"BENCH_CPU_MS": f"{plan.cpu_ms:g}"}
    deployment = Deployment(
        f"{config.id}-r{rep}",
        database="postgres",
        apis=config.apis,
        workers=config.workers,
        extra_args=plan.batchgate_args,
        extra_env=extra_env,
        cgroups=cgroups,
        quotas=config.quotas,
    )
    cells = [Cell(rep, config, kind, load) for kind in plan.kinds for load in plan.loads]
    running = False
    try:
        for n, cell in enumerate(cells):
            if not running:
                running = True  # before it starts: a start cut short (Ctrl-C) is stopped all the same
                error = await start(deployment, env)
                if error is not None:
                    data["cells"] += [rest.failed(error) for rest in cells[n:]]
                    break
            log.info("    %s %s %s", config.id, cell.kind, cell.load)
            result = await measurer.measure(deployment, cell)
            data["cells"].append(result)
            log_cell(result)
            if not result["gate"]["ok"]:  # what it left behind must not reach the next cell
                await deployment.stop(env)
                running = False
    finally:
        if running:
            await deployment.stop(env)
    return {"label": deployment.label, **deployment.settings()}


async def start(deployment: Deployment, env: Env) -> str | None:
    """None once started, else why not (its cells are then voided, and the run goes on)."""
    try:
        await deployment.start(env)
    except Exception as exc:
        log.error("%s did not start: %s", deployment.id, exc)
        return f"{deployment.id} did not start: {type(exc).__name__}: {str(exc)[-1500:]}"
    return None


def log_cell(result: dict[str, Any]) -> None:
    metrics = result.get("metrics") or {}
    verdict = result["gate"]
    state = (
        "ok" if verdict["ok"] else f"VOID ({verdict['problem_count']} problems: {verdict['problems'][:2]})"
    )
    usage = ", ".join(
        f"{role} {p['cpu_s']}s/{p['throttled_pct']:g}%thr"
        for role, p in (result.get("processes") or {}).items()
    )
    log.info(
        "      jobs/s=%s submit batches/s=%s; %s; gate %s",
        metrics.get("jobs_per_s"),
        metrics.get("submit_batches_per_s"),
        usage,
        state,
    )


def notes(plan: ScalePlan) -> list[str]:
    found = []
    if not any(arg.startswith("--max-batches") for arg in plan.batchgate_args):
        found.append(
            "Every worker runs with batchgate's default --max-batches (50): a worker claims up to 50 "
            "batches at once, so when a queue is waiting the first worker to look can take all of it."
        )
    return found


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    return modes.run_main(lambda: run(plan, args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
