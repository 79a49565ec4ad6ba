"""The numbers of one measured run (BENCH.md "Metrics"), from the load generator's submits and the
receiver's arrivals, and the median and range across repetitions."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from bench.suite.loadgen import Submit
from bench.suite.receiver import Arrival


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def batch_metrics(
    submits: Sequence[Submit], arrivals: Iterable[Arrival], jobs_per_batch: int
) -> dict[str, Any]:
    accepted = [s for s in submits if s.async_id is not None]
    first_arrival: dict[str, Arrival] = {}
    for arrival in arrivals:
        if arrival.async_id is not None:
            first_arrival.setdefault(arrival.async_id, arrival)
    if not accepted:
        return {"batches": 0}
    first = min(s.start for s in submits)
    submit_s = [s.end - s.start for s in accepted]
    last_answer = max(s.end for s in accepted)
    called_back = [s for s in accepted if s.async_id in first_arrival]
    latencies = [first_arrival[s.async_id].at - s.origin for s in called_back if s.async_id]
    waits, pickups = _queue_waits(called_back, first_arrival)
    complete = len(called_back) == len(submits)
    last_callback = max((first_arrival[s.async_id].at for s in called_back if s.async_id), default=None)
    elapsed = (last_callback - first) if last_callback is not None else None
    return {
        "batches": len(submits),
        "jobs": len(submits) * jobs_per_batch,
        "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
        "submit_batches_per_s": round(len(accepted) / max(last_answer - first, 1e-9), 2),
        "submit_p50_ms": _ms(percentile(submit_s, 50)),
        "submit_p99_ms": _ms(percentile(submit_s, 99)),
        "jobs_per_s": round(len(submits) * jobs_per_batch / elapsed, 1) if complete and elapsed else None,
        "e2e_p50_ms": _ms(percentile(latencies, 50)),
        "e2e_p90_ms": _ms(percentile(latencies, 90)),
        "e2e_p99_ms": _ms(percentile(latencies, 99)),
        "e2e_max_ms": _ms(max(latencies, default=None)),
        "queue_wait_p50_ms": _ms(percentile(waits, 50)),
        "queue_wait_p99_ms": _ms(percentile(waits, 99)),
        "pickup_p50_ms": _ms(percentile(pickups, 50)),
        "pickup_p99_ms": _ms(percentile(pickups, 99)),
    }


def _queue_waits(
    called_back: Sequence[Submit], first_arrival: dict[str, Arrival]
) -> tuple[list[float], list[float]]:
    """Per job: when it started (its own timestamp) minus when its batch was sent; per batch: the
    first job's start minus the send (how long until a worker picked the batch up)."""
    waits: list[float] = []
    pickups: list[float] = []
    for submit in called_back:
        assert submit.async_id is not None
        try:
            results = orjson.loads(first_arrival[submit.async_id].body)["results"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        starts = []
        for result in results:
            response = result.get("response") if isinstance(result, dict) else None
            if isinstance(response, dict):
                started = response.get("started", response.get("at"))
                if isinstance(started, int | float):
                    starts.append(started - submit.wall)
        waits.extend(starts)
        if starts:
            pickups.append(min(starts))
    return waits, pickups


def call_metrics(submits: Sequence[Submit]) -> dict[str, Any]:
    accepted = [s for s in submits if s.async_id is not None]
    if not accepted:
        return {"calls": 0}
    elapsed = max(s.end for s in submits) - min(s.start for s in submits)
    durations = [s.end - s.start for s in accepted]
    return {
        "calls": len(submits),
        "errors": len(submits) - len(accepted),
        "calls_per_s": round(len(accepted) / elapsed, 1),
        "submit_p50_ms": _ms(percentile(durations, 50)),
        "submit_p99_ms": _ms(percentile(durations, 99)),
    }


def summarize(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Median and range of one metric across repetitions (None values left out)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": round(statistics.median(present), 3),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }
