"""What batchgate.tracing's hooks cost a job, with tracing off and on: `python -m bench.tracing_hooks`.

Each hook wraps a coroutine that returns at once, run to its end without an event loop, so the
numbers are the hooks' own cost per call. With tracing off a job passes two of them (`job`, and
`upstream_attempt` plus `inject` when it is forwarded); a noop job costs batchgate about 30 µs
(docs/performance.md), so compare the differences below with that.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from batchgate import tracing
from batchgate.models import Finished, JobOutcome, JobSpec

N = 200_000
SPEC = JobSpec("event", "add", "{}")
DONE = Finished(0, b"{}", JobOutcome.SUCCEEDED, 0.0)


class FakeRun:
    """What the `job` hook reads of a BatchRun: nothing, beside what it passes on."""


async def run_job(batch: Any, index: int, spec: JobSpec) -> Finished:
    return DONE


traced_run_job = tracing.job(run_job)


def drive(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine awaited something")


def per_call_ns(calls: dict[str, Callable[[], None]], n: int, rounds: int = 7) -> dict[str, float]:
    """The fastest of `rounds` rounds of each call, in nanoseconds per call: the rounds take turns,
    so that a change of clock speed falls on each alike (the fastest, as timeit advises)."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter_ns()
            for _ in range(n):
                call()
            best[name] = min(best[name], (time.perf_counter_ns() - started) / n)
    return best


def main() -> None:
    batch: Any = FakeRun()
    headers: dict[str, str] = {}
    off = per_call_ns(
        {
            "job, undecorated": lambda: drive(run_job(batch, 0, SPEC)),
            "job, hook off": lambda: drive(traced_run_job(batch, 0, SPEC)),
            "inject, off": lambda: tracing.inject(headers),
        },
        N,
    )
    base = off["job, undecorated"]
    print(f"tracing off: {N:,} calls, fastest of 7 rounds, Python {sys.version.split()[0]}")
    for name, ns in off.items():
        print(f"  {name:<24} {ns:8.0f} ns" + (f"  (+{ns - base:.0f} ns)" if name.startswith("job,") else ""))
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:
        print("tracing on: not measured (the otel extra is not installed)")
        return
    on: dict[str, float] = {}
    for name, provider in (
        ("job, hook on, sampled", TracerProvider()),  # spans made and ended, exported nowhere
        ("job, hook on, dropped", TracerProvider(sampler=ParentBased(ALWAYS_OFF))),
    ):
        tracing.enable(provider)
        try:  # under the batch's span, as a job runs
            with provider.get_tracer("bench").start_as_current_span("batch.process"):
                on |= per_call_ns({name: lambda: drive(traced_run_job(batch, 0, SPEC))}, N // 20)
        finally:
            tracing.stop()
    print(f"tracing on: {N // 20:,} calls under a batch's span, no exporter")
    for name, ns in on.items():
        print(f"  {name:<24} {ns:8.0f} ns  (+{ns - base:.0f} ns)")


if __name__ == "__main__":
    main()
