"""Runs the cells of a plan against the systems: start, warm up, measure, gate, stop.

For each cell: one uncounted warm-up batch (it also proves the workers are up), then the shape
with the sampler running, then the wait for every callback, a short linger for late duplicates,
the gate over exactly what the receiver recorded meanwhile, and, once the measurement is over,
one scrape of the system's own metrics where it has them (batchgate's /metrics).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.suite import gate, loadgen
from bench.suite.metrics import batch_metrics, call_metrics
from bench.suite.plan import Cell, Plan
from bench.suite.receiver import Arrival, Receiver
from bench.suite.sampler import Sampler
from bench.suite.systems import Env, System
from bench.suite.workload import WARMUP, Workload, run_call_body

log = logging.getLogger("bench")
WARMUP_TIMEOUT_S = 120.0
MAX_START_FAILURES = 2


class CellError(RuntimeError):
    """The cell could not be measured (the system did not start, the warm-up never called back)."""


def inject(records: list[Arrival], fault: str | None) -> list[Arrival]:
    """The records as the gate sees them, with a callback dropped or duplicated on request."""
    if not records or fault is None:
        return records
    if fault == "drop":
        return records[1:]
    if fault == "duplicate":
        return [*records, records[0]]
    raise ValueError(f"unknown fault {fault!r}")


@dataclass
class Runner:
    plan: Plan
    env: Env
    receiver: Receiver
    workloads: dict[str, Workload]
    checkpoint: Callable[[], None] = lambda: None
    results: list[dict[str, Any]] = field(default_factory=list)
    _start_failures: dict[str, int] = field(default_factory=dict)

    async def run(
        self, systems: dict[str, System], cells: list[Cell], total: int | None = None
    ) -> list[dict[str, Any]]:
        """Runs `cells`; `total` is how many the whole run has, for the progress lines."""
        total = total or len(self.results) + len(cells)  # a resumed run counts on from where it was
        if self.plan.fresh_per_cell:
            groups = [[cell] for cell in cells]
        else:
            groups = [list(g) for _, g in itertools.groupby(cells, key=lambda c: (c.rep, c.system))]
        for group in groups:
            system = systems[group[0].system]
            start_error = await self._start(system)
            try:
                for cell in group:
                    where = f"[{len(self.results) + 1}/{total}] rep {cell.rep}"
                    log.info("%s %s %s %s", where, cell.system, cell.kind, cell.shape.label)
                    if start_error is not None:
                        result = self._failed(cell, start_error)
                    else:
                        result = await self._cell(system, cell)
                    self.results.append(result)
                    self._log(result)
                    self.checkpoint()
            finally:
                if start_error is None:
                    await system.stop(self.env)
                    self._cleanup(system)
        return self.results

    async def _start(self, system: System) -> str | None:
        """None once started, else why not."""
        if self._start_failures.get(system.id, 0) >= MAX_START_FAILURES:
            return f"{system.id} failed to start {MAX_START_FAILURES} times; its other cells are skipped"
        try:
            await system.start(self.env)
        except Exception as exc:
            await system.stop(self.env)
            self._start_failures[system.id] = self._start_failures.get(system.id, 0) + 1
            log.error("%s did not start: %s", system.id, exc)
            return f"{system.id} did not start: {type(exc).__name__}: {str(exc)[-1500:]}"
        return None

    def _cleanup(self, system: System) -> None:
        for path in self.env.work_dir.glob(f"{system.id}-*.db*"):
            path.unlink(missing_ok=True)

    def _base(self, cell: Cell) -> dict[str, Any]:
        return {
            "rep": cell.rep,
            "system": cell.system,
            "kind": cell.kind,
            "shape": cell.shape.label,
            "rate": cell.shape.rate,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _failed(self, cell: Cell, error: str) -> dict[str, Any]:
        verdict = gate.Verdict(False, 0, 0, 0, [error], 1)
        return {**self._base(cell), "error": error, "metrics": {}, "resources": {}, "gate": verdict.to_json()}

    async def _cell(self, system: System, cell: Cell) -> dict[str, Any]:
        try:
            return await self._measure(system, cell)
        except Exception as exc:
            log.exception("%s %s %s failed", cell.system, cell.kind, cell.shape.label)
            return self._failed(cell, f"{type(exc).__name__}: {exc}")

    async def _measure(self, system: System, cell: Cell) -> dict[str, Any]:
        plan, receiver = self.plan, self.receiver
        record = self._base(cell)
        batches = plan.solo_batches if cell.shape.name == "solo" else plan.batches
        workload = self.workloads[cell.kind].for_cell(
            f"{len(self.results)}", range(batches), system.run_options
        )
        gen = loadgen.LoadGen(
            system.url,
            system.key,
            system.secret,
            connections=0 if cell.shape.name == "paced" else loadgen.BURST_CONNECTIONS,
        )
        try:
            await self._warm_up(system, gen, workload)
            groups = {"service": system.service_group(), **await system.infra_groups(self.env)}
            sampler = Sampler(groups)
            calls = range(plan.run_calls if cell.shape.name == "run" else 0)
            bodies = [run_call_body(call, system.run_options) for call in calls]  # before timing
            mark = receiver.mark()
            sampler.start()
            started = time.perf_counter()
            if cell.shape.name == "run":
                submits = await loadgen.run_calls(gen, plan.run_calls, bodies.__getitem__)
                resources = sampler.stop()
                metrics = call_metrics(submits)
                errors = [s.error for s in submits if s.error]
                problems = [f"submit failed: {e}" for e in errors[: gate.MAX_PROBLEMS_SHOWN]]
                verdict = gate.Verdict(not errors, 0, 0, 0, problems, len(errors))
                jobs = len(submits)
            else:
                submits = await self._shape(gen, cell, workload)
                accepted = {s.async_id: s.batch for s in submits if s.async_id is not None}
                timeout = plan.callback_timeout_s(len(submits) * workload.jobs_per_batch)
                timeout -= time.perf_counter() - started
                await self._await_callbacks(system, set(accepted), timeout)
                resources = sampler.stop()
                await asyncio.sleep(plan.linger_s)
                records = receiver.since(mark)
                expected = {b: workload.jobs(b) for b in range(batches)}
                errors = [f"batch {s.batch}: {s.error}" for s in submits if s.error]
                verdict = gate.check(
                    expected, accepted, inject(records, plan.inject_fault), submit_errors=errors
                )
                metrics = batch_metrics(submits, records, workload.jobs_per_batch)
                jobs = metrics.get("jobs", 0)
        finally:
            await gen.close()
        record.update(metrics=metrics, resources=resources, gate=verdict.to_json(), error=None)
        record["cpu_s_per_10k_jobs"] = _cpu_per_10k(resources, jobs)
        if system.run_options:
            record["run_options"] = system.run_options
        scraped = await system.scrape()  # after the measurement: it times nothing
        if scraped is not None:
            record["service_metrics"] = scraped
        return record

    async def _await_callbacks(self, system: System, ids: set[str], timeout_s: float) -> None:
        """Until every callback has arrived, the time is up, one of the system's processes died,
        or no callback at all has arrived for `plan.stall_s` (a lost callback never comes: waiting
        out the whole timeout for it would only stretch the run)."""
        deadline = time.monotonic() + timeout_s
        arrived, last_progress = self.receiver.mark(), time.monotonic()
        while not await self.receiver.wait_for(ids, 1.0):
            now = time.monotonic()
            if self.receiver.mark() != arrived:
                arrived, last_progress = self.receiver.mark(), now
            if system.dead() is not None or now > deadline or now - last_progress > self.plan.stall_s:
                return

    async def _warm_up(self, system: System, gen: loadgen.LoadGen, workload: Workload) -> None:
        """One uncounted batch; it fails fast when one of the system's processes has died."""
        warm = await gen.submit(WARMUP, workload.body(WARMUP))
        if warm.async_id is None:
            raise CellError(f"the warm-up batch was refused: {warm.error}")
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while not await self.receiver.wait_for({warm.async_id}, 1.0):
            if (dead := system.dead()) is not None:
                raise CellError(f"the warm-up batch never called back: {dead}")
            if time.monotonic() > deadline:
                raise CellError(f"the warm-up batch did not call back within {WARMUP_TIMEOUT_S:g} s")

    async def _shape(self, gen: loadgen.LoadGen, cell: Cell, workload: Workload) -> list[loadgen.Submit]:
        if cell.shape.name == "solo":
            batches = list(range(self.plan.solo_batches))
            timeout = min(self.plan.callback_timeout_s(workload.jobs_per_batch), self.plan.stall_s)
            return await loadgen.solo(gen, batches, workload.body, self.receiver, timeout)
        batches = list(range(self.plan.batches))
        if cell.shape.name == "paced":
            assert cell.shape.rate is not None
            return await loadgen.paced(gen, batches, workload.body, cell.shape.rate)
        return await loadgen.burst(gen, batches, workload.body)

    def _log(self, result: dict[str, Any]) -> None:
        metrics = result.get("metrics") or {}
        verdict = result["gate"]
        state = (
            "ok"
            if verdict["ok"]
            else f"VOID ({verdict['problem_count']} problems: {verdict['problems'][:2]})"
        )
        figures = ", ".join(
            f"{name}={metrics[name]}"
            for name in ("jobs_per_s", "calls_per_s", "e2e_p50_ms", "e2e_p99_ms", "submit_p50_ms")
            if metrics.get(name) is not None
        )
        log.info("    %s; gate %s", figures or result.get("error"), state)


def _cpu_per_10k(resources: dict[str, Any], jobs: int) -> dict[str, float | None]:
    if not jobs:
        return {}
    found: dict[str, float | None] = {}
    for name, group in resources.items():
        found[name] = None if group is None else round(group["cpu_s"] * 10000 / jobs, 2)
    return found
