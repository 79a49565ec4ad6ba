"""The report: raw results as JSON, a Markdown table, and the targets as ratios of this run.

Medians across repetitions are shown with their range [min-max] when there is more than one.
Only cells whose gate passed count towards the medians; a voided cell is listed, not averaged.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.suite import procs
from bench.suite.limits import spread as limits_spread
from bench.suite.metrics import summarize
from bench.suite.systems.batchgate import RATE_LIMIT

METRICS = (
    "jobs_per_s", "calls_per_s", "submit_batches_per_s", "submit_p50_ms", "submit_p99_ms",
    "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "queue_wait_p99_ms", "pickup_p50_ms",
)  # fmt: skip
PACKAGES = (
    "batchgate", "aiohttp", "uvicorn", "uvloop", "httptools", "orjson", "starlette", "asyncpg",
    "celery", "kombu", "redis", "arq", "saq", "procrastinate", "psycopg", "psycopg-pool", "urllib3",
    "psutil", "matplotlib",
)  # fmt: skip
TUNED_ALTERNATIVES = ("CEL-T", "ARQ-T", "SAQ-T", "PRO-T")  # what the BG-S targets compare with


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=procs.REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    status = _git("status", "--porcelain")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": {name: _version(name) for name in PACKAGES},
    }


# summary -----------------------------------------------------------------------------------------


def _resource(cell: dict[str, Any], group: str, field: str) -> float | None:
    found = (cell.get("resources") or {}).get(group)
    return None if not found else found.get(field)


def _infra_peak(cell: dict[str, Any]) -> float | None:
    for group, field in (("postgres", "peak_pss_mb"), ("redis", "peak_rss_mb")):
        value = _resource(cell, group, field)
        if value is not None:
            return value
    return None


def _infra_cpu(cell: dict[str, Any]) -> float | None:
    per = cell.get("cpu_s_per_10k_jobs") or {}
    values = [v for k, v in per.items() if k != "service" and v is not None]
    return sum(values) if values else None


def summary(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, kind, shape): medians and ranges over the cells that passed the gate."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        grouped[(cell["system"], cell["kind"], cell["shape"])].append(cell)
    rows = []
    for (system, kind, shape), found in grouped.items():
        passed = [c for c in found if c["gate"]["ok"]]
        row: dict[str, Any] = {
            "system": system,
            "kind": kind,
            "shape": shape,
            "runs": len(found),
            "passed": len(passed),
            "problems": [p for c in found if not c["gate"]["ok"] for p in c["gate"]["problems"][:3]][:6],
        }
        for metric in METRICS:
            row[metric] = summarize([(c.get("metrics") or {}).get(metric) for c in passed])
        row["service_peak_rss_mb"] = summarize([_resource(c, "service", "peak_rss_mb") for c in passed])
        row["infra_peak_mb"] = summarize([_infra_peak(c) for c in passed])
        row["service_cpu_s_per_10k"] = summarize(
            [(c.get("cpu_s_per_10k_jobs") or {}).get("service") for c in passed]
        )
        row["infra_cpu_s_per_10k"] = summarize([_infra_cpu(c) for c in passed])
        row["serve_peak_rss_mb"] = summarize(
            [
                ((c.get("resources") or {}).get("service") or {}).get("peak_rss_mb_by_role", {}).get("serve")
                for c in passed
            ]
        )
        rows.append(row)
    return rows


def _median(rows: Sequence[dict[str, Any]], system: str, kind: str, shape: str, metric: str) -> float | None:
    for row in rows:
        if (row["system"], row["kind"], row["shape"]) == (system, kind, shape):
            found = row.get(metric)
            return None if found is None else found["median"]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else round(a / b, 3)


REPORTED = "reported"  # a figure shown beside a target, without a goal of its own


def _target(name: str, value: float | None, goal: str, basis: str) -> dict[str, Any]:
    """`goal` is an operator and a number, e.g. ">= 5", or REPORTED; `met` is None when nothing
    was measured, or when the figure has no goal."""
    if goal == REPORTED:
        return {"target": name, "value": value, "goal": goal, "met": None, "basis": basis}
    operator, _, number = goal.partition(" ")
    threshold = float(number)
    checks = {">=": value is not None and value >= threshold, "<=": value is not None and value <= threshold}
    checks["<"] = value is not None and value < threshold
    met = None if value is None else checks[operator]
    return {"target": name, "value": value, "goal": goal, "met": met, "basis": basis}


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def targets(
    rows: Sequence[dict[str, Any]], limits: dict[str, Any], *, jobs_per_batch: int | None = None
) -> list[dict[str, Any]]:
    """Issue 13's targets (and issue 11's observability cost, issue 5's memory target), as ratios of
    medians measured in this run; whether met is reported only. BG-S is batchgate at its defaults (a
    batch's jobs in order); BG-SC the same whose bodies ask for `"concurrency": 50`; BG-S0 BG-S with
    metrics and info logs off."""

    def median(system: str, kind: str, shape: str, metric: str) -> float | None:
        return _median(rows, system, kind, shape, metric)

    batch = f"{jobs_per_batch}-job" if jobs_per_batch else "whole"
    found = []
    for alt in TUNED_ALTERNATIVES:
        ratio = _ratio(
            median("BG-S", "noop", "burst", "jobs_per_s"), median(alt, "noop", "burst", "jobs_per_s")
        )
        basis = "end-to-end jobs/s: all batches, first submit to last callback"
        found.append(_target(f"noop burst jobs/s, BG-S / {alt}", ratio, ">= 5", basis))
    for alt in TUNED_ALTERNATIVES:
        ratio = _ratio(
            median("BG-S", "noop", "solo", "e2e_p50_ms"), median(alt, "noop", "solo", "e2e_p50_ms")
        )
        basis = "p50 over batches sent one at a time"
        found.append(_target(f"noop solo submit->callback p50, BG-S / {alt}", ratio, "<= 0.2", basis))
    sqlite_full = (limits.get("sqlite_wal_full_1_row") or {}).get("tx_per_s")
    ratio = _ratio(median("BG-S", "noop", "run", "calls_per_s"), sqlite_full)
    name = "run calls/s (BG-S) / raw SQLite 1-row commits/s (WAL, FULL)"
    found.append(_target(name, ratio, ">= 0.5", "1-job batches from 8 connections"))
    stub_loop = limits.get("aiohttp_client_to_stub_per_s")
    basis = "the same upstream stub, 50 requests in flight"
    for system, goal in (("BG-S", ">= 0.8"), ("BG-SC", REPORTED)):
        ratio = _ratio(median(system, "http", "burst", "jobs_per_s"), stub_loop)
        name = f"http burst jobs/s ({system}) / bare aiohttp client loop to the stub"
        found.append(_target(name, ratio, goal, basis))
    # latency near the floor: one raw commit and one raw HTTP round trip, both of this run
    round_trip_us = limits.get("http_round_trip_p50_us")
    floor_ms = None
    if sqlite_full and round_trip_us is not None:
        floor_ms = 1000 / sqlite_full + round_trip_us / 1000
        basis = (
            f"{batch} noop batches sent one at a time; floor = one raw SQLite 1-row commit (WAL, FULL: "
            f"{_ms(1000 / sqlite_full)}) + one HTTP round trip to uvicorn (p50 {_ms(round_trip_us / 1000)}) "
            f"= {_ms(floor_ms)}"
        )
    else:
        basis = f"{batch} noop batches sent one at a time; the floor's limits were not measured"
    ratio = _ratio(median("BG-S", "noop", "solo", "e2e_p50_ms"), floor_ms)
    name = "noop solo submit->callback p50 (BG-S) / (1 raw commit + 1 raw HTTP round trip)"
    found.append(_target(name, ratio, "<= 5", basis))
    # jobs that take time: the concurrent case (BG-SC), the sequential default (BG-S) beside it
    for system, goal in (("BG-SC", "<= 0.5"), ("BG-S", REPORTED)):
        ratio = _ratio(
            median(system, "io10", "solo", "e2e_p50_ms"), median("ARQ-T", "io10", "solo", "e2e_p50_ms")
        )
        order = "jobs 50 at a time" if system == "BG-SC" else "jobs in order, one after another"
        basis = f"{batch} io10 batches sent one at a time; {system}: {order}"
        found.append(_target(f"io10 solo submit->callback p50, {system} / ARQ-T", ratio, goal, basis))
    peers = {alt: median(alt, "io10", "burst", "jobs_per_s") for alt in TUNED_ALTERNATIVES}
    measured = {alt: value for alt, value in peers.items() if value is not None}
    best = max(measured, key=lambda alt: measured[alt]) if measured else None
    for system, goal in (("BG-SC", ">= 5"), ("BG-S", REPORTED)):
        ratio = _ratio(median(system, "io10", "burst", "jobs_per_s"), measured.get(best) if best else None)
        basis = (
            f"end-to-end jobs/s; the best tuned peer here: {best} ({measured[best]:,.0f} jobs/s)"
            if best
            else "end-to-end jobs/s; no tuned peer measured"
        )
        found.append(_target(f"io10 burst jobs/s, {system} / the best tuned peer", ratio, goal, basis))
    # issue 12: a batch's own concurrency, at the same number of batches in flight as BG-S
    ratio = _ratio(
        median("BG-SC10", "io10", "burst", "jobs_per_s"), median("BG-S", "io10", "burst", "jobs_per_s")
    )
    basis = (
        'BG-SC10 (`"concurrency": 10`, 50 batches in flight: up to 500 jobs) / BG-S (jobs in order, '
        "50 batches in flight), end-to-end jobs/s"
    )
    found.append(_target("io10 burst jobs/s, concurrency 10 / sequential", ratio, ">= 5", basis))
    # what bounds it: a process's CPU, which the noop burst (no waiting at all) measures
    ratio = _ratio(
        median("BG-SC10", "io10", "burst", "jobs_per_s"), median("BG-S", "noop", "burst", "jobs_per_s")
    )
    basis = "BG-SC10's io10 burst / BG-S's noop burst: 1 when waiting costs nothing and the CPU bounds both"
    found.append(_target("io10 burst jobs/s, concurrency 10 / noop burst", ratio, REPORTED, basis))
    # the most concurrency could reach on this host: an io10 job costs at least a noop job's CPU
    ratio = _ratio(
        median("BG-S", "noop", "burst", "jobs_per_s"), median("BG-S", "io10", "burst", "jobs_per_s")
    )
    basis = (
        "BG-S's noop burst / BG-S's io10 burst: what concurrency 10 / sequential reaches when waiting "
        "costs nothing, on this host (the sequential burst is bound by its sleeps, the noop one by the CPU)"
    )
    found.append(
        _target("io10 burst: this host's bound on concurrency 10 / sequential", ratio, REPORTED, basis)
    )
    # ... and what it buys a client waiting for one batch
    ratio = _ratio(
        median("BG-SC10", "io10", "solo", "e2e_p50_ms"), median("BG-S", "io10", "solo", "e2e_p50_ms")
    )
    basis = f"{batch} io10 batches sent one at a time; BG-SC10: 10 jobs at a time, BG-S: in order"
    name = "io10 solo submit->callback p50, concurrency 10 / sequential"
    found.append(_target(name, ratio, REPORTED, basis))
    ratio = _ratio(
        median("BG-P2", "noop", "burst", "jobs_per_s"), median("BG-P1", "noop", "burst", "jobs_per_s")
    )
    basis = (
        "BG-P2 / BG-P1; on this 2-core machine every process shares the same two cores: scale-out is "
        "measured by bench/scaleout (each process in a cgroup with a CPU quota) instead"
    )
    found.append(_target("noop burst jobs/s, PostgreSQL 2 workers / 1 worker", ratio, REPORTED, basis))
    # issue 11: what metrics and JSON logs cost, against BG-S0 (the same with them off)
    basis = "BG-S (metrics, JSON info logs, admin listener scraped) / BG-S0 (metrics no-ops, warnings only)"
    for shape, metric, label in (
        ("burst", "jobs_per_s", "noop burst jobs/s"),
        ("run", "calls_per_s", "run calls/s"),
    ):
        ratio = _ratio(median("BG-S", "noop", shape, metric), median("BG-S0", "noop", shape, metric))
        found.append(_target(f"{label} with observability on / off", ratio, ">= 0.9", basis))
    rss = median("BG-S", "noop", "burst", "serve_peak_rss_mb")
    name = "peak RSS of `batchgate serve` during the noop burst (MB)"
    found.append(_target(name, rss, "< 150", "BG-S, sampled every 100 ms"))
    return found


# markdown ----------------------------------------------------------------------------------------


def _fmt(value: dict[str, Any] | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    text = f"{value['median']:,.{digits}f}"
    if value.get("n", 1) > 1 and value["min"] != value["max"]:
        text += f" [{value['min']:,.{digits}f}-{value['max']:,.{digits}f}]"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _pair(a: dict[str, Any] | None, b: dict[str, Any] | None, digits: int = 1) -> str:
    return f"{_fmt(a, digits)} / {_fmt(b, digits)}"


def markdown(report: dict[str, Any]) -> str:
    meta, plan = report["meta"], report["plan"]
    machine = meta["machine"]
    lines = [
        f"# batchgate benchmark: {plan['mode']} run, {meta['finished_at']}",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
        f"Python {machine['python']}; batchgate at {str(machine['git_commit'])[:10]}"
        f"{' (uncommitted changes)' if machine['git_dirty'] else ''}; "
        f"{plan['batches']} batches x {plan['jobs_per_batch']} jobs ({plan['solo_batches']} solo), "
        f"{plan['reps']} repetition(s){', shuffled' if plan['shuffle'] else ''}; "
        f"fresh state {'per cell' if plan['fresh_per_cell'] else 'per system start'}; "
        f"http jobs via {meta['http_forwarding']}. Took {_duration(meta.get('duration_s'))}.",
        "",
        "Medians over the runs that passed the correctness gate, [min-max] when there are several. "
        "Absolute numbers drift between runs and machines: compare within this report.",
        "",
    ]
    if meta.get("notes"):
        lines += ["", *[f"> {note}" for note in meta["notes"]], ""]
    lines += ["## Targets (ratios of this run; reported, not asserted)", "",
              "| target | measured | goal | met | basis |", "|---|---|---|---|---|"]  # fmt: skip
    for target in report["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        met = "-" if target["goal"] == REPORTED else met
        value = "-" if target["value"] is None else f"{target['value']:g}"
        lines.append(f"| {target['target']} | {value} | {target['goal']} | {met} | {target['basis']} |")
    lines += _result_tables(report)
    lines += _limits_table(report.get("limits") or {}, report.get("limits_runs") or [])
    lines += _systems_table(report)
    lines += ["", "## Fairness and method", ""] + [f"- {note}" for note in report["method"]]
    return "\n".join(lines) + "\n"


def _result_tables(report: dict[str, Any]) -> list[str]:
    rows = report["summary"]
    order = {s: i for i, s in enumerate(report["systems"])}
    lines: list[str] = []
    sections = sorted({(r["kind"], r["shape"]) for r in rows}, key=_section_order)
    for kind, shape in sections:
        found = sorted(
            (r for r in rows if (r["kind"], r["shape"]) == (kind, shape)),
            key=lambda r: order.get(r["system"], 99),
        )
        lines += ["", f"## {kind}, {shape}", ""]
        if shape == "run":
            lines += ["| system | run calls/s | submit p50 / p99 ms | gate |", "|---|---|---|---|"]
            for r in found:
                submit = _pair(r["submit_p50_ms"], r["submit_p99_ms"])
                lines.append(f"| {r['system']} | {_fmt(r['calls_per_s'])} | {submit} | {_gate(r)} |")
            continue
        # jobs/s and batches/s of a paced or solo run are set by the shape, not the system: left out
        throughput = shape == "burst"
        head = ["system", *(["jobs/s", "submit batches/s"] if throughput else [])]
        head += ["submit p50 / p99 ms", "submit→callback p50 / p90 / p99 ms", "queue wait p99 ms"]
        head += ["pick-up p50 ms", "peak MB service / infra", "CPU s per 10k jobs service / infra", "gate"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in found:
            cells = [r["system"]]
            if throughput:
                cells += [_fmt(r["jobs_per_s"]), _fmt(r["submit_batches_per_s"], 1)]
            cells += [
                _pair(r["submit_p50_ms"], r["submit_p99_ms"]),
                f"{_fmt(r['e2e_p50_ms'])} / {_fmt(r['e2e_p90_ms'])} / {_fmt(r['e2e_p99_ms'])}",
                _fmt(r["queue_wait_p99_ms"]),
                _fmt(r["pickup_p50_ms"], 1),
                _pair(r["service_peak_rss_mb"], r["infra_peak_mb"], 0),
                _pair(r["service_cpu_s_per_10k"], r["infra_cpu_s_per_10k"], 2),
                _gate(r),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section_order(section: tuple[str, str]) -> tuple[int, int, str]:
    kind, shape = section
    kinds = {"noop": 0, "io10": 1, "http": 2}
    shapes = {"burst": 0, "solo": 2, "run": 3}
    return (kinds.get(kind, 9), shapes.get(shape, 1), shape)


def _gate(row: dict[str, Any]) -> str:
    if row["passed"] == row["runs"]:
        return f"ok {row['passed']}/{row['runs']}"
    return f"**VOID** {row['runs'] - row['passed']}/{row['runs']}: {'; '.join(row['problems'][:2])}"


def _limits_table(limits: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    if not limits:
        return ["", "## Machine limits", "", "not measured in this run"]
    heading = f"median of {len(runs)} measurements, one per repetition" if len(runs) > 1 else "same run"
    lines = ["", f"## Machine limits ({heading})", "", "| limit | value |", "|---|---|"]

    def shown(value: Any, name: str, key: str | None = None) -> str:
        if not isinstance(value, int | float):
            return str(value)
        found = limits_spread(runs, name, key)
        return f"{value:,}" + (f" [{found[0]:,}-{found[1]:,}]" if found and found[0] != found[1] else "")

    for name, value in limits.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}={shown(v, name, k)}" for k, v in value.items())
        else:
            text = shown(value, name)
        lines.append(f"| {name} | {text} |")
    return lines


def _systems_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Systems",
        "",
        "| id | system | processes | options | durability |",
        "|---|---|---|---|---|",
    ]
    for system_id, info in report["systems"].items():
        if info.get("skipped"):
            lines.append(f"| {system_id} | **skipped** | | | {info['skipped']} |")
            continue
        settings = info.get("settings") or {}
        options = settings.get("options") or settings.get("worker_options") or ""
        lines.append(
            f"| {system_id} | {settings.get('label', '')} | {', '.join(settings.get('processes', []))} "
            f"| {options} | {settings.get('durability', '')} |"
        )
    return lines


METHOD = [
    "Every system gets the same request bodies, byte for byte, from the same aiohttp load generator, "
    "signed the IWS way; batchgate and the alternatives' endpoint both verify the signature. The one "
    'difference: BG-SC\'s `batch.run` bodies end with one more field, `"concurrency": 50`; every other '
    "byte is the same.",
    "One callback receiver for all; a run is void unless every batch called back exactly once with every "
    "job's own result, in order, without an error (the gate).",
    "batchgate runs the jobs of a batch one after another, in order, by default (SPEC.md decision 7: "
    'BG-S, BG-P1, BG-P2); BG-SC asks for `"concurrency": 50` in its bodies (protocol.md section 7.3), '
    "so that a batch's jobs run 50 at a time, as Celery's chord and the arq, SAQ and procrastinate "
    "counters run them in parallel. The sequential default is reported beside the concurrent case.",
    "batchgate acknowledges a batch only once it is committed (SQLite FULL / PostgreSQL), and so does "
    "procrastinate (PostgreSQL); the Redis-based alternatives acknowledge once the tasks are in Redis, "
    "which by default does not fsync: the durability column says which class each system is in (the "
    "-TF systems run Redis with appendfsync always).",
    "At most 50 jobs in flight per system: batchgate --max-batches 50 (25 per worker with two; BG-SC "
    "--max-batches 1, one batch of 50 concurrent jobs at a time), Celery tuned -c 50 (defaults: 2 "
    "prefork children), arq tuned max_jobs=50 (defaults: 10), SAQ and procrastinate tuned 2 worker "
    "processes of 25 (defaults: one process, concurrency 10 and 1). With 10 ms jobs that bounds every "
    "system's io10 burst at 5,000 jobs/s. One exception, compared with BG-S alone: BG-SC10 asks for "
    '`"concurrency": 10` at batchgate\'s default --max-batches 50 (up to 500 jobs in flight), to show '
    "what a batch's own concurrency buys at the same number of batches in flight.",
    "Every batchgate feature is on: replay protection (a signed request runs once), the per-account "
    f"quotas (open batches, result bytes, reposts; the rate limit raised to {RATE_LIMIT:,} requests/s "
    "from its default 1,000 with a burst of 2,000, so that the `run` measurement's 2,000 calls from one "
    "account measure batchgate and not the limiter), JSON logs at the default level (info: a line per "
    "batch accepted, started and finished), and every process's admin listener with /metrics behind an "
    "admin token, scraped once at the end of each cell (the JSON's `service_metrics`).",
    "Everything runs on this one machine: the load generator, the receiver and the upstream stub share "
    "its 2 cores with the system under test, equally for every system.",
    "Peak memory: the service's processes (RSS, summed at each 100 ms sample) and the infrastructure "
    "apart (Redis RSS; PostgreSQL PSS of the run's backends and the server's background processes). "
    "CPU seconds are user + system time over the measured window, per 10,000 jobs.",
    "queue wait: a job's own start timestamp minus its batch's send time (the stub's arrival time for "
    "http); pick-up: the same for a batch's first job to start.",
]
