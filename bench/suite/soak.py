"""bench/soak: batchgate held at half its peak submit rate for ten minutes: does it lose anything,
does its memory grow, does its latency drift?

For each system, SQLite (one `batchgate serve`) and PostgreSQL (`serve --no-worker` and one
`batchgate worker`), on a fresh database: one warm-up batch; the peak submit rate, from a short
burst of `run` calls (8 connections) of the soak's own batches, unless `--rate` gives it; then the
soak: batches of 20 noop jobs with a callback URL, sent open loop (each at its scheduled time,
whatever happened to the earlier ones) at half that peak, for ten minutes (`--duration`; `--quick`:
60 s). Then:

- nothing lost: every callback goes through the correctness gate (gate.py): each batch called back
  exactly once with every job's own result, in order. The gate checks the soak window by window
  (`--check-s`), so that the harness need not keep every callback body of the run in memory; a
  callback arriving after its window was checked is counted as a duplicate;
- memory: the RSS of every batchgate process, sampled every second; its median in the last minute
  over the first, which must grow less than 10 %;
- latency: p99 of submit-to-callback (from each batch's scheduled send) of the batches sent in
  the last minute over those of the first: target at most 1.5.

"Minute" is `--window-s` (60), a third of the run at most (`--quick`: 20 s). The report goes to
bench/results/soak-<UTC>.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import statistics
import sys
import time
from array import array
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.suite import gate, infra, loadgen, modes, procstat
from bench.suite.deployment import Deployment
from bench.suite.metrics import batch_metrics, percentile
from bench.suite.receiver import Arrival, Receiver
from bench.suite.report import _duration
from bench.suite.systems.base import Env
from bench.suite.workload import Workload

log = logging.getLogger("bench")
SYSTEMS = {
    "sqlite": "1 `batchgate serve` on SQLite",
    "postgres": "PostgreSQL: `serve --no-worker` + 1 `worker`",
}
PEAK_FIRST_BATCH = -1000  # the peak burst's batches are -1000, -1001, ...: apart from the soak's 0, 1, ...
RSS_GROWTH_LIMIT = 0.10
P99_RATIO_LIMIT = 1.5


@dataclass
class SoakPlan:
    mode: str = "full"
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    duration_s: float = 600.0
    jobs_per_batch: int = 20
    rate: float | None = None  # batches/s; None: `fraction` of the measured peak
    fraction: float = 0.5
    peak_batches: int = 400
    window_s: float = 60.0
    bucket_s: float = 60.0  # rows of the over-time table
    sample_s: float = 1.0
    check_s: float = 10.0
    batchgate_args: list[str] = field(default_factory=list)
    stall_s: float = 60.0
    linger_s: float = 1.0

    @property
    def window(self) -> float:
        return min(self.window_s, self.duration_s / 3)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="60 s per system, 10 s rows, 200-batch peak")
    parser.add_argument("--duration", type=float, help="seconds of soak per system (600)")
    parser.add_argument("--systems", help="sqlite,postgres (both)")
    parser.add_argument("--jobs", type=int, help="noop jobs per batch (20)")
    parser.add_argument(
        "--rate", type=float, help="batches/s to send (default: --fraction of the measured peak)"
    )
    parser.add_argument("--fraction", type=float, help="share of the peak submit rate to send at (0.5)")
    parser.add_argument("--peak-batches", type=int, help="batches of the burst that measures the peak (400)")
    parser.add_argument("--window-s", type=float, help="the first and last 'minute' compared, s (60)")
    parser.add_argument("--bucket-s", type=float, help="rows of the over-time table, s (60)")
    parser.add_argument("--sample-s", type=float, help="seconds between RSS samples (1)")
    parser.add_argument("--check-s", type=float, help="the gate's window while the soak runs, s (10)")
    modes.common_options(parser)
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> SoakPlan:
    plan = SoakPlan()
    if args.quick:
        plan = SoakPlan(mode="quick", duration_s=60.0, bucket_s=10.0, peak_batches=200)
    if args.systems:
        plan.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        if set(plan.systems) - set(SYSTEMS):
            raise SystemExit(f"systems are {', '.join(SYSTEMS)}")
    overrides = {
        "duration": "duration_s", "jobs": "jobs_per_batch", "rate": "rate", "fraction": "fraction",
        "peak_batches": "peak_batches", "window_s": "window_s", "bucket_s": "bucket_s",
        "sample_s": "sample_s", "check_s": "check_s",
    }  # fmt: skip
    for name, attribute in overrides.items():
        if getattr(args, name) is not None:
            setattr(plan, attribute, getattr(args, name))
    plan.batchgate_args = list(args.batchgate_arg)
    return plan


class StreamReceiver(Receiver):
    """The receiver, whose records the soak takes away as it checks them (a ten-minute run's
    callback bodies would not fit in memory otherwise)."""

    def take(self) -> list[Arrival]:
        taken, self.arrivals = self.arrivals, []
        return taken


class Uncached(Workload):
    """The workload, without keeping every body it encoded."""

    def body(self, batch: int) -> bytes:
        found = super().body(batch)
        self._bodies.pop(batch, None)
        return found


# the soak ----------------------------------------------------------------------------------------


class Soak:
    """One system's soak: the open-loop sender, the window-by-window gate and the RSS sampler."""

    def __init__(
        self,
        plan: SoakPlan,
        deployment: Deployment,
        receiver: StreamReceiver,
        workload: Workload,
        rate: float,
    ) -> None:
        self.plan, self.deployment, self.receiver, self.workload = plan, deployment, receiver, workload
        self.rate = rate
        self.count = max(1, int(rate * plan.duration_s))
        self.per_window = max(1, round(rate * plan.check_s))
        self.t0 = 0.0
        nan = [math.nan] * self.count
        self.latency = array("d", nan)  # s, scheduled send -> first callback
        self.send_lag = array("d", nan)  # s, scheduled -> sent
        self.submit_s = array("d", nan)
        self.batch_of: dict[str, int] = {}
        self.accepted: dict[int, dict[str, int]] = defaultdict(dict)  # window -> asyncId -> batch
        self.errors: dict[int, list[str]] = defaultdict(list)
        self.answered: dict[int, int] = defaultdict(int)
        self.called: dict[int, int] = defaultdict(int)
        self.records: dict[int, list[Arrival]] = defaultdict(list)
        self.last_arrival: dict[int, float] = {}
        self.closed: set[int] = set()
        self.unmatched: list[Arrival] = []
        self.late: list[str] = []
        self.verdicts: list[gate.Verdict] = []
        self.samples: dict[str, list[tuple[float, float | None, float | None]]] = defaultdict(list)
        self.called_total = 0
        self.last_progress = time.monotonic()
        self.finished = asyncio.Event()

    def window_of(self, batch: int) -> int:
        return batch // self.per_window

    def scheduled(self, batch: int) -> float:
        return self.t0 + batch / self.rate

    async def run(self) -> None:
        gen = loadgen.LoadGen(self.deployment.url, self.deployment.key, self.deployment.secret, connections=0)
        self.t0 = time.perf_counter() + 0.1
        checker = asyncio.create_task(self._check_loop())
        sampler = asyncio.create_task(self._sample_loop())
        try:
            await self._send(gen)
            await self._await_callbacks()
            await asyncio.sleep(self.plan.linger_s)
        finally:
            self.finished.set()  # the checker stops after the window it may be checking
            sampler.cancel()
            await asyncio.gather(checker, sampler, return_exceptions=True)
            await gen.close()
        self._take()
        for window in range(self.window_of(self.count - 1) + 1):
            if window not in self.closed:
                await self._close(window)
        if self.unmatched:  # callbacks of no batch the soak sent: the gate names them
            self.verdicts.append(gate.check({}, {}, self.unmatched))

    async def _send(self, gen: loadgen.LoadGen) -> None:
        """Open loop: batch i is sent at t0 + i / rate, whatever became of the earlier ones."""
        tasks: set[asyncio.Task[None]] = set()
        for batch in range(self.count):
            delay = self.scheduled(batch) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._submit(gen, batch))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _submit(self, gen: loadgen.LoadGen, batch: int) -> None:
        scheduled = self.scheduled(batch)
        submit = await gen.submit(batch, self.workload.body(batch), scheduled)
        self.send_lag[batch] = submit.start - scheduled
        self.submit_s[batch] = submit.end - submit.start
        window = self.window_of(batch)
        if submit.async_id is None:
            self.errors[window].append(f"batch {batch}: {submit.error}")
        else:
            self.batch_of[submit.async_id] = batch
            self.accepted[window][submit.async_id] = batch
        self.answered[window] += 1

    async def _await_callbacks(self) -> None:
        """Until every accepted batch has called back, or none has for `stall_s`, or a process died."""
        while self.called_total < len(self.batch_of):
            if (
                self.deployment.dead() is not None
                or time.monotonic() - self.last_progress > self.plan.stall_s
            ):
                return
            await asyncio.sleep(0.2)

    async def _check_loop(self) -> None:
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), 0.5)
            self._take()
            now = time.perf_counter()
            for window in sorted(self.accepted.keys() - self.closed):
                if self._settled(window, now):
                    await self._close(window)

    def _take(self) -> None:
        arrivals, self.unmatched = [*self.unmatched, *self.receiver.take()], []
        for arrival in arrivals:
            batch = self.batch_of.get(arrival.async_id or "")
            if batch is None:
                self.unmatched.append(arrival)  # its submit's answer may not be read yet
                continue
            window = self.window_of(batch)
            if window in self.closed:
                self.late.append(f"batch {batch} ({arrival.async_id}) called back again after it was checked")
                continue
            if math.isnan(self.latency[batch]):
                self.latency[batch] = arrival.at - self.scheduled(batch)
                self.called[window] += 1
                self.called_total += 1
                self.last_progress = time.monotonic()
            self.records[window].append(arrival)
            self.last_arrival[window] = arrival.at

    def _settled(self, window: int, now: float) -> bool:
        """Every batch of the window answered and called back, and no callback for `linger_s`."""
        first, last = window * self.per_window, min((window + 1) * self.per_window, self.count)
        return (
            self.answered[window] == last - first
            and self.called[window] == len(self.accepted[window])
            and now - self.last_arrival.get(window, now) >= self.plan.linger_s
        )

    async def _close(self, window: int) -> None:
        """The gate over one window's batches and every callback that came for them (in a thread, so
        that the sender keeps to its schedule meanwhile)."""
        first, last = window * self.per_window, min((window + 1) * self.per_window, self.count)
        expected = {batch: self.workload.jobs(batch) for batch in range(first, last)}
        records = self.records.pop(window, [])
        accepted = self.accepted.pop(window, {})
        self.closed.add(window)
        errors = self.errors.pop(window, [])
        self.verdicts.append(
            await asyncio.to_thread(gate.check, expected, accepted, records, submit_errors=errors)
        )

    async def _sample_loop(self) -> None:
        while True:
            at = time.perf_counter() - self.t0
            for role, pid in {**self.deployment.pids(), "harness": os.getpid()}.items():
                self.samples[role].append((round(at, 2), procstat.rss_mb(pid), procstat.cpu_s(pid)))
            await asyncio.sleep(self.plan.sample_s)

    def verdict(self) -> dict[str, Any]:
        """Every window's verdict, and the late callbacks, as one."""
        problems = [p for v in self.verdicts for p in v.problems] + self.late
        return gate.Verdict(
            ok=all(v.ok for v in self.verdicts) and not self.late,
            expected_callbacks=sum(v.expected_callbacks for v in self.verdicts),
            callbacks=sum(v.callbacks for v in self.verdicts) + len(self.late),
            jobs_checked=sum(v.jobs_checked for v in self.verdicts),
            problems=problems[: gate.MAX_PROBLEMS_SHOWN],
            problem_count=sum(v.problem_count for v in self.verdicts) + len(self.late),
        ).to_json()


# figures -----------------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> float | None:
    found = percentile(values, q)
    return None if found is None else round(found * 1000, 1)


def figures(soak: Soak) -> dict[str, Any]:
    plan, rate = soak.plan, soak.rate
    duration = soak.count / rate
    window = min(plan.window_s, duration / 3)
    first = _latencies(soak, 0.0, window)
    last = _latencies(soak, duration - window, duration)
    p99_first, p99_last = _ms(first, 99), _ms(last, 99)
    lags = [v for v in soak.send_lag if not math.isnan(v)]
    submits = [v for v in soak.submit_s if not math.isnan(v)]
    return {
        "rate_batches_per_s": round(rate, 2),
        "rate_jobs_per_s": round(rate * plan.jobs_per_batch, 1),
        "jobs_per_batch": plan.jobs_per_batch,
        "batches": soak.count,
        "duration_s": round(duration, 1),
        "window_s": round(window, 1),
        "called_back": soak.called_total,
        "send_lag_p99_ms": _ms(lags, 99),
        "submit_p50_ms": _ms(submits, 50),
        "submit_p99_ms": _ms(submits, 99),
        "e2e_p50_ms": _ms(_latencies(soak, 0.0, duration), 50),
        "e2e_p99_ms": _ms(_latencies(soak, 0.0, duration), 99),
        "e2e_p99_first_ms": p99_first,
        "e2e_p99_last_ms": p99_last,
        "p99_ratio": None if not p99_first or p99_last is None else round(p99_last / p99_first, 3),
        "rss": {role: _rss(samples, window, duration) for role, samples in soak.samples.items()},
        "buckets": _buckets(soak, duration),
    }


def _latencies(soak: Soak, start_s: float, end_s: float) -> list[float]:
    first = max(0, math.ceil(start_s * soak.rate))
    last = min(soak.count, math.ceil(end_s * soak.rate))
    return [v for v in soak.latency[first:last] if not math.isnan(v)]


def _rss(
    samples: list[tuple[float, float | None, float | None]], window: float, duration: float
) -> dict[str, Any]:
    first = [rss for at, rss, _ in samples if rss is not None and 0 <= at < window]
    last = [rss for at, rss, _ in samples if rss is not None and duration - window <= at <= duration]
    first_mb = round(statistics.median(first), 1) if first else None
    last_mb = round(statistics.median(last), 1) if last else None
    growth = None if not first_mb or last_mb is None else round(last_mb / first_mb - 1, 4)
    return {
        "first_mb": first_mb,
        "last_mb": last_mb,
        "growth": growth,
        "peak_mb": max((rss for _, rss, _ in samples if rss is not None), default=None),
        "samples": [[at, rss, cpu] for at, rss, cpu in samples],
    }


def _buckets(soak: Soak, duration: float) -> list[dict[str, Any]]:
    rows = []
    size = soak.plan.bucket_s
    for n in range(max(1, math.ceil(duration / size - 1e-9))):
        start, end = n * size, min((n + 1) * size, duration)
        latencies = _latencies(soak, start, end)
        row: dict[str, Any] = {
            "from_s": start,
            "to_s": round(end, 1),
            "sent": min(soak.count, math.ceil(end * soak.rate))
            - min(soak.count, math.ceil(start * soak.rate)),
            "called_back": len(latencies),
            "e2e_p50_ms": _ms(latencies, 50),
            "e2e_p99_ms": _ms(latencies, 99),
            "e2e_max_ms": _ms(latencies, 100),
            "rss_mb": {},
            "cpu_pct": {},
        }
        for role, samples in soak.samples.items():
            inside = [(at, rss, cpu) for at, rss, cpu in samples if start <= at <= end]
            values = [rss for _, rss, _ in inside if rss is not None]
            row["rss_mb"][role] = round(statistics.median(values), 1) if values else None
            cpus = [(at, cpu) for at, _, cpu in inside if cpu is not None]
            span = cpus[-1][0] - cpus[0][0] if len(cpus) > 1 else 0.0
            row["cpu_pct"][role] = round(100 * (cpus[-1][1] - cpus[0][1]) / span) if span > 0 else None
        rows.append(row)
    return rows


# the run -----------------------------------------------------------------------------------------


async def measure_peak(
    plan: SoakPlan, deployment: Deployment, receiver: StreamReceiver, workload: Workload
) -> dict[str, Any]:
    """Submit batches/s of a burst of the soak's own batches from 8 connections, every callback gated."""
    gen = loadgen.LoadGen(deployment.url, deployment.key, deployment.secret)
    batches = [PEAK_FIRST_BATCH - n for n in range(plan.peak_batches)]
    mark = receiver.mark()
    try:
        submits = await loadgen.burst(gen, batches, workload.body)
    finally:
        await gen.close()
    accepted = {s.async_id: s.batch for s in submits if s.async_id is not None}
    why = await modes.wait_callbacks(
        receiver, set(accepted), dead=deployment.dead, timeout_s=120 + plan.peak_batches, stall_s=plan.stall_s
    )
    await asyncio.sleep(plan.linger_s)
    records = receiver.since(mark)
    errors = [f"batch {s.batch}: {s.error}" for s in submits if s.error]
    verdict = gate.check({b: workload.jobs(b) for b in batches}, accepted, records, submit_errors=errors)
    modes.stopped_waiting(verdict, why)
    receiver.take()
    return {"metrics": batch_metrics(submits, records, plan.jobs_per_batch), "gate": verdict.to_json()}


async def soak_system(plan: SoakPlan, env: Env, receiver: StreamReceiver, system: str) -> dict[str, Any]:
    deployment = Deployment(
        system.upper(),
        database=system,
        workers=0 if system == "sqlite" else 1,
        extra_args=plan.batchgate_args,
    )
    result: dict[str, Any] = {
        "system": system,
        "label": SYSTEMS[system],
        "started_at": modes.now(),
        "error": None,
    }
    problem = await deployment.problem(env)
    if problem:
        return {**result, "error": problem}
    workload = Uncached("noop", plan.jobs_per_batch, receiver.url)
    try:
        try:  # in the outer try: a start cut short (Ctrl-C) is stopped all the same
            await deployment.start(env)
        except Exception as exc:
            log.error("%s did not start: %s", system, exc)
            return {**result, "error": f"did not start: {type(exc).__name__}: {str(exc)[-1500:]}"}
        gen = loadgen.LoadGen(deployment.url, deployment.key, deployment.secret)
        try:
            await modes.warm_up([gen], workload.body, receiver, deployment.dead)
        finally:
            await gen.close()
        receiver.take()
        rate = plan.rate
        if rate is None:
            log.info("%s: measuring the peak submit rate (%d batches)", system, plan.peak_batches)
            result["peak"] = await measure_peak(plan, deployment, receiver, workload)
            peak = result["peak"]["metrics"].get("submit_batches_per_s")
            if not result["peak"]["gate"]["ok"] or not peak:
                return {**result, "error": f"the peak burst failed: {result['peak']['gate']['problems'][:3]}"}
            rate = peak * plan.fraction
        log.info("%s: soak at %.1f batches/s for %.0f s", system, rate, plan.duration_s)
        soak = Soak(plan, deployment, receiver, workload, rate)
        await soak.run()
        result.update(gate=soak.verdict(), figures=figures(soak), settings=deployment.settings())
        result["dead"] = deployment.dead()
    finally:
        await deployment.stop(env)
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = result.get("figures") or {}
    checks = [
        {
            "target": "nothing lost: every batch called back exactly once, every job once (the gate)",
            "value": "ok" if (result.get("gate") or {}).get("ok") else "VOID",
            "goal": "ok",
            "met": bool((result.get("gate") or {}).get("ok")),
        }
    ]
    for role, rss in (found.get("rss") or {}).items():
        if role == "harness":
            continue
        growth = rss.get("growth")
        checks.append(
            {
                "target": f"RSS of `{role}`, last minute over first (median)",
                "value": None if growth is None else f"{100 * growth:+.1f} %",
                "goal": f"< {100 * RSS_GROWTH_LIMIT:g} %",
                "met": None if growth is None else growth < RSS_GROWTH_LIMIT,
            }
        )
    ratio = found.get("p99_ratio")
    checks.append(
        {
            "target": "submit-to-callback p99, last minute over first",
            "value": ratio,
            "goal": f"<= {P99_RATIO_LIMIT:g}",
            "met": None if ratio is None else ratio <= P99_RATIO_LIMIT,
        }
    )
    return checks


async def run(plan: SoakPlan, args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = modes.WorkDir(args.work_dir, args.keep_work)
    env = modes.make_env(work.path, args.pg_url)
    where = modes.stem(args.out, args.name, "soak")
    receiver = StreamReceiver()
    await receiver.start()
    try:
        data: dict[str, Any] = {
            "meta": {**modes.meta([]), "work_dir": str(work.path)},
            "plan": asdict(plan),
            "systems": [],
        }
        for system in plan.systems:
            if system == "postgres":
                # as PostgreSQL runs in production: this machine's server may have autovacuum off
                async with infra.pg_server_settings(env.infra.pg_url, PG_SETTINGS) as replaced:
                    data["meta"]["postgres_settings"] = {"set": PG_SETTINGS, "replaced": replaced}
                    data["systems"].append(await soak_system(plan, env, receiver, system))
            else:
                data["systems"].append(await soak_system(plan, env, receiver, system))
            data["meta"]["duration_s"] = round(time.monotonic() - started, 1)
            modes.checkpoint(data, where)
        data["meta"]["finished_at"] = modes.now()
        written = modes.write(data, where, markdown)
        print(markdown(data))
        for path in written:
            print(f"wrote {path}")
        failed = [s for s in data["systems"] if s.get("error") or not (s.get("gate") or {}).get("ok")]
        work.keep = work.keep or bool(failed)
        return 2 if failed else 0
    finally:
        await receiver.stop()
        work.close()


# markdown ----------------------------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    meta, plan = data["meta"], data["plan"]
    machine = meta["machine"]
    extra = " ".join(plan["batchgate_args"])
    rate = f"{plan['rate']:g} batches/s" if plan.get("rate") else f"{plan['fraction']:g} x the measured peak"
    window = min(plan["window_s"], plan["duration_s"] / 3)
    lines = [
        f"# batchgate soak: {plan['mode']} run, {meta['finished_at']}",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; Python "
        f"{machine['python']}; batchgate at {str(machine['git_commit'])[:10]}"
        f"{' (uncommitted changes)' if machine['git_dirty'] else ''}. {_duration(plan['duration_s'])} per "
        f"system, open loop at {rate} submit rate; batches of {plan['jobs_per_batch']} noop jobs with a "
        f"callback URL; batchgate's defaults{f' plus `{extra}`' if extra else ''}. The first and last "
        f"'minute' are {window:.0f} s. Took {_duration(meta.get('duration_s'))}.",
        "",
        "The machine is shared and has 2 cores: the figures are noisy; what matters is whether anything was "
        "lost, and how the end of each run compares with its start.",
        "",
        "## Targets",
        "",
        "| system | rate batches/s (jobs/s) | peak burst: submit / end-to-end batches/s | batches sent "
        "| target | measured | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in data["systems"]:
        lines += _target_rows(result)
    for result in data["systems"]:
        lines += _over_time(result)
    lines += ["", "## Method", ""] + [f"- {note}" for note in METHOD]
    return "\n".join(lines) + "\n"


def _target_rows(result: dict[str, Any]) -> list[str]:
    if result.get("error") and not result.get("figures"):
        return [f"| {result['label']} | | | | **failed** | {result['error'][:300]} | | |"]
    found = result["figures"]
    peak = (result.get("peak") or {}).get("metrics") or {}
    submitted, drained = peak.get("submit_batches_per_s"), peak.get("jobs_per_s")
    drained = None if drained is None else drained / result["figures"]["jobs_per_batch"]
    head = [
        result["label"],
        f"{found['rate_batches_per_s']:g} ({found['rate_jobs_per_s']:,.0f})",
        "-" if submitted is None else f"{submitted:,.1f} / {'-' if drained is None else f'{drained:,.1f}'}",
        f"{found['batches']:,}",
    ]
    rows = []
    for n, target in enumerate(result["targets"]):
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        value = "-" if target["value"] is None else str(target["value"])
        if target["target"].startswith("nothing lost") and not result["gate"]["ok"]:
            value = f"VOID: {'; '.join(result['gate']['problems'][:2])}"
        cells = (head if n == 0 else ["", "", "", ""]) + [target["target"], value, target["goal"], met]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _over_time(result: dict[str, Any]) -> list[str]:
    found = result.get("figures")
    if not found:
        return []
    roles = [role for role in found["rss"] if role != "harness"] + ["harness"]
    rss = found["rss"]
    memory = ", ".join(f"{r} {rss[r]['first_mb']} / {rss[r]['last_mb']} / {rss[r]['peak_mb']}" for r in roles)
    lines = [
        "",
        f"## {result['label']}, over time",
        "",
        f"Submit p50 / p99 {found['submit_p50_ms']} / {found['submit_p99_ms']} ms; the load generator sent "
        f"late by {found['send_lag_p99_ms']} ms at p99; submit→callback p50 / p99 over the run "
        f"{found['e2e_p50_ms']} / {found['e2e_p99_ms']} ms; p99 of the first / last minute "
        f"{found['e2e_p99_first_ms']} / {found['e2e_p99_last_ms']} ms. RSS MB, first / last minute (median) "
        f"/ peak: {memory}. `harness` is the load generator and receiver (one process), for reference.",
        "",
        "| s | sent | called back | submit→callback p50 / p99 / max ms | RSS MB | CPU % of one core |",
        "|---|---|---|---|---|---|",
    ]
    for row in found["buckets"]:
        rss = ", ".join(f"{role} {row['rss_mb'].get(role)}" for role in roles)
        cpu = ", ".join(f"{role} {row['cpu_pct'].get(role)}" for role in roles)
        lines.append(
            f"| {row['from_s']:g}-{row['to_s']:g} | {row['sent']:,} | {row['called_back']:,} | "
            f"{row['e2e_p50_ms']} / {row['e2e_p99_ms']} / {row['e2e_max_ms']} | {rss} | {cpu} |"
        )
    return lines


PG_SETTINGS = {"autovacuum": "on"}  # PostgreSQL's default, which a queue's tables rely on
METHOD = [
    "Each system starts on a fresh database (a SQLite file, or a PostgreSQL database created and dropped) "
    "with batchgate's defaults plus --callback-allow 127.0.0.1 --log-level warning.",
    "PostgreSQL runs with autovacuum on, its default, as production runs it: set for the PostgreSQL soak "
    "with ALTER SYSTEM and reset after it (the JSON's meta.postgres_settings has what it replaced).",
    "The peak: the submit batches/s of a burst of the soak's own batches from 8 connections (every one "
    "called back and gated before the soak starts). The soak sends at --fraction of it (or --rate). Its "
    "end-to-end rate (first submit to last callback) is shown beside it: a soak faster than that cannot "
    "keep up, however fast `run` answers.",
    "Open loop: batch i is sent at t0 + i / rate on a connection pool without a limit, whatever became of "
    "the earlier ones; submit→callback runs from that scheduled time, so a lagging sender or a server "
    "that falls behind both show.",
    "The gate (bench/suite/gate.py) checks each window of batches once all of them have called back, over "
    "every callback that came for them; a callback for a batch already checked counts as a duplicate.",
    "RSS and CPU time of every batchgate process from /proc, every --sample-s; growth compares the median "
    "RSS of the last 'minute' with the first's.",
]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    return modes.run_main(lambda: run(plan, args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
