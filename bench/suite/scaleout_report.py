"""The scale-out report: medians per cell over the repetitions that passed the gate, the scaling
ratios, what PostgreSQL was doing, as JSON (`summarize_run`) and Markdown (`markdown`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.suite import pgsample
from bench.suite.metrics import summarize
from bench.suite.report import _duration, _fmt, _ratio

METRICS = (
    "jobs_per_s", "e2e_jobs_per_s", "drain_s", "submit_batches_per_s", "submit_p50_ms", "submit_p99_ms",
    "e2e_p50_ms", "e2e_p99_ms", "pickup_p50_ms",
)  # fmt: skip
LOAD_TEXT = {
    "preload": "The workers stopped while every batch is submitted, then let go: jobs/s is the drain rate, "
    "from letting go to the last callback; submit batches/s is the API processes' alone",
    "burst": "Every batch from 8 connections while the workers run: jobs/s from the first submit to the "
    "last callback",
}


def summarize_run(data: dict[str, Any]) -> None:
    """Adds `summary` (one row per configuration, kind and load) and `ratios` to the report."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in data["cells"]:
        grouped[(cell["config"], cell["kind"], cell["load"])].append(cell)
    data["summary"] = [_row(key, cells) for key, cells in grouped.items()]
    data["ratios"] = ratios(data["summary"], data["plan"])


def _row(key: tuple[str, str, str], cells: list[dict[str, Any]]) -> dict[str, Any]:
    passed = [c for c in cells if c["gate"]["ok"]]
    row: dict[str, Any] = {
        "config": key[0],
        "kind": key[1],
        "load": key[2],
        "runs": len(cells),
        "passed": len(passed),
        "problems": [p for c in cells if not c["gate"]["ok"] for p in c["gate"]["problems"][:3]][:6],
    }
    for metric in METRICS:
        row[metric] = summarize([(c.get("metrics") or {}).get(metric) for c in passed])
    roles = sorted({role for c in passed for role in c.get("processes") or {}})
    row["processes"] = {
        role: {
            name: summarize([((c.get("processes") or {}).get(role) or {}).get(name) for c in passed])
            for name in ("cpu_s", "throttled_pct")
        }
        for role in roles
    }
    row["pg_commits_per_s"] = summarize([(c.get("postgres") or {}).get("commits_per_s") for c in passed])
    row["pg_cpu_s"] = summarize([(c.get("postgres") or {}).get("cpu_s") for c in passed])
    row["harness_cpu_s"] = summarize([c.get("harness_cpu_s") for c in passed])
    row["ceiling_jobs_per_s"] = next((c.get("ceiling_jobs_per_s") for c in cells), None)
    row["pg_sample"] = pgsample.merge([c["pg_sample"] for c in cells if c.get("pg_sample")])
    return row


def _median(rows: list[dict[str, Any]], config: str, kind: str, load: str, metric: str) -> float | None:
    for row in rows:
        if (row["config"], row["kind"], row["load"]) == (config, kind, load):
            found = row.get(metric)
            return None if found is None else found["median"]
    return None


def ratios(rows: list[dict[str, Any]], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """2w/1w, 4w/1w on jobs/s; 2api/1api on jobs/s and on submit batches/s; per kind and load."""
    found = []
    axes = (("w", "W", plan["worker_counts"], ("jobs_per_s",)),)
    axes += (("api", "A", plan["api_counts"], ("jobs_per_s", "submit_batches_per_s")),)
    for kind in plan["kinds"]:
        for load in plan["loads"]:
            for suffix, prefix, counts, metrics in axes:
                for n in counts[1:]:
                    for metric in metrics:
                        value = _ratio(
                            _median(rows, f"{prefix}{n}", kind, load, metric),
                            _median(rows, f"{prefix}{counts[0]}", kind, load, metric),
                        )
                        name = f"{n}{suffix}/{counts[0]}{suffix}"
                        found.append(
                            {"kind": kind, "load": load, "ratio": name, "metric": metric, "value": value}
                        )
    return found


# markdown ----------------------------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    meta, plan = data["meta"], data["plan"]
    machine, postgres = meta["machine"], meta["postgres"]
    extra = " ".join(plan["batchgate_args"])
    lines = [
        f"# batchgate scale-out: {plan['mode']} run, {meta['finished_at']}",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
        f"Python {machine['python']}; batchgate at {str(machine['git_commit'])[:10]}"
        f"{' (uncommitted changes)' if machine['git_dirty'] else ''}; PostgreSQL "
        f"{postgres.get('server_version')} (synchronous_commit={postgres.get('synchronous_commit')}). "
        f"CPU limits: {meta['cgroups']['hierarchy']}, period {plan['period_us'] / 1000:g} ms. "
        f"batchgate options: its defaults{f' plus `{extra}`' if extra else ''}. "
        f"noop and io10: {plan['batches']} batches x {plan['jobs_per_batch']} jobs; cpu: "
        f"{plan['cpu_batches']} x {plan['cpu_jobs_per_batch']} jobs of {plan['cpu_ms']:g} ms CPU. "
        f"{plan['reps']} repetition(s), the configurations shuffled in each (seed {plan['seed']}). "
        f"Took {_duration(meta.get('duration_s'))}.",
        "",
        "Medians over the measurements that passed the correctness gate, [min-max] when there are several. "
        "The machine is shared and has 2 cores: compare within this report.",
        "",
    ]
    if meta.get("notes"):
        lines += [*(f"> {note}" for note in meta["notes"]), ""]
    lines += _ratios_table(data)
    lines += _configs_table(data)
    for kind in plan["kinds"]:
        for load in plan["loads"]:
            rows = sorted(
                (r for r in data["summary"] if (r["kind"], r["load"]) == (kind, load)),
                key=lambda r: config_order(r["config"]),
            )
            lines += _cell_table(kind, load, rows)
    lines += _postgres_section(data)
    lines += ["", "## Method", ""] + [f"- {note}" for note in METHOD]
    return "\n".join(lines) + "\n"


def config_order(config: str) -> tuple[bool, int]:
    """W1, W2, W4, then A1, A2."""
    return (not config.startswith("W"), int(config[1:]) if config[1:].isdigit() else 99)


def _ratios_table(data: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(f"{r['ratio']} {r['metric']}" for r in data["ratios"]))
    if not names:
        return []
    labels = [
        name.replace("submit_batches_per_s", "submit batches/s").replace("jobs_per_s", "jobs/s")
        for name in names
    ]
    lines = ["## Scaling ratios (of medians)", "", "| kind | load | " + " | ".join(labels) + " |"]
    lines.append("|---|---|" + "---|" * len(names))
    by_key: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    for r in data["ratios"]:
        by_key[(r["kind"], r["load"])][f"{r['ratio']} {r['metric']}"] = r["value"]
    for (kind, load), values in by_key.items():
        shown = ["-" if values.get(name) is None else f"{values[name]:.2f}" for name in names]
        lines.append(f"| {kind} | {load} | " + " | ".join(shown) + " |")
    return lines


def _configs_table(data: dict[str, Any]) -> list[str]:
    lines = ["", "## Configurations", "", "| id | processes | CPU quota of each process |", "|---|---|---|"]
    for config, info in sorted(data["configs"].items(), key=lambda item: config_order(item[0])):
        quotas = ", ".join(
            f"{role} {'no limit' if not pct else f'{pct:g} %'}"
            for role, pct in (info.get("cpu_quota_pct") or {}).items()
        )
        lines.append(f"| {config} | {info.get('label', '')} | {quotas} |")
    return lines


def _cell_table(kind: str, load: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    head = "drain jobs/s" if load == "preload" else "jobs/s"
    lines = ["", f"## {kind}, {load}", "", f"{LOAD_TEXT[load]}.", ""]
    columns = ["config", head, "submit batches/s", "submit→callback p50 / p99 ms", "pick-up p50 ms"]
    columns += ["CPU s per process (share of its periods throttled)", "PostgreSQL commits/s, CPU s", "gate"]
    ceiling = any(r.get("ceiling_jobs_per_s") for r in rows)
    if ceiling:
        columns.insert(2, "CPU ceiling jobs/s")
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r["config"], _fmt(r["jobs_per_s"])]
        if ceiling:
            cells.append("-" if r.get("ceiling_jobs_per_s") is None else f"{r['ceiling_jobs_per_s']:g}")
        cells += [
            _fmt(r["submit_batches_per_s"], 1),
            f"{_fmt(r['e2e_p50_ms'])} / {_fmt(r['e2e_p99_ms'])}",
            _fmt(r["pickup_p50_ms"], 1),
            _usage(r["processes"]),
            f"{_fmt(r['pg_commits_per_s'])}, {_fmt(r['pg_cpu_s'], 2)}",
            _gate(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _usage(processes: dict[str, Any]) -> str:
    parts = []
    for role, usage in processes.items():
        cpu, throttled = usage.get("cpu_s"), usage.get("throttled_pct")
        cpu_text = "-" if cpu is None else f"{cpu['median']:.2f}"
        throttled_text = "-" if throttled is None else f"{throttled['median']:.0f} %"
        parts.append(f"{role} {cpu_text} ({throttled_text})")
    return ", ".join(parts) or "-"


def _gate(row: dict[str, Any]) -> str:
    if row["passed"] == row["runs"]:
        return f"ok {row['passed']}/{row['runs']}"
    return f"**VOID** {row['runs'] - row['passed']}/{row['runs']}: {'; '.join(row['problems'][:2])}"


def _postgres_section(data: dict[str, Any]) -> list[str]:
    hints = data["meta"].get("postgres_profiling") or {}
    lines = ["", "## PostgreSQL", ""]
    if hints:
        loaded = ", ".join(hints.get("loaded") or []) or "none"
        available = ", ".join(hints.get("available") or []) or "none"
        lines.append(
            f"Statement profilers loaded: {loaded} (available: {available}; "
            "pg_stat_statements needs `shared_preload_libraries` and a restart of the server)."
        )
    sampled = [r for r in data["summary"] if r.get("pg_sample")]
    if not sampled:
        lines += ["", "Not sampled: `--pg-sample` reads pg_stat_activity and pg_locks while each cell runs."]
        return lines
    lines += [
        "",
        "Sampled every "
        f"{data['plan']['pg_sample_interval_s']:g} s; all repetitions together. Busy: a batchgate backend "
        "not idle (active, or idle in a transaction). Waiting on: the share of busy backend-samples per wait "
        "event (CPU: none, running or queued for a core; Client:ClientRead while active: the server waits "
        "for the rest of a statement from its client, such as a worker held at its quota; LWLock:WALWrite "
        "and IO:WALSync: commits waiting for the WAL to be flushed; Lock:object on the NOTIFY queue: "
        "transactions that NOTIFY commit one at a time).",
        "",
        "| config | kind, load | samples | busy backends per sample | waiting on | busiest statements "
        "| samples with lock waits: top waits |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sampled:
        sample = r["pg_sample"]
        busy = sample["busy_backend_samples"]
        per_sample = busy / sample["samples"] if sample["samples"] else 0.0
        queries = (
            "; ".join(f"`{q[:50]}` {100 * n / busy:.0f} %" for q, n in list(sample["queries"].items())[:3])
            if busy
            else "-"
        )
        waits = ", ".join(f"{name} ({n})" for name, n in list(sample["lock_waits"].items())[:3]) or "none"
        lines.append(
            f"| {r['config']} | {r['kind']}, {r['load']} | {sample['samples']} | {per_sample:.2f} | "
            f"{pgsample.top_shares(sample['waits'], busy)} | {queries} | "
            f"{sample['samples_with_lock_waits']}: {waits} |"
        )
    return lines


METHOD = [
    "Each batchgate process runs in a cgroup of its own with a CPU quota (cpu.cfs_quota_us over "
    "cpu.cfs_period_us, or cpu.max on cgroup v2), entered before it execs; PostgreSQL, the load "
    "generator and the callback receiver (this harness, one process) are not limited.",
    "One fresh PostgreSQL database per start of a configuration; its kinds and loads then run on it one "
    "after another (a voided measurement restarts it). One warm-up batch per API process before each.",
    "preload: the worker processes get SIGSTOP, every batch is submitted, and 0.2 s after the last answer "
    "they get SIGCONT. burst: batches from 8 connections, spread over the API processes.",
    "The correctness gate (bench/suite/gate.py) checks every callback: every batch called back exactly once, "
    "one result per job, in order, each the job's own. A voided measurement is listed, not averaged.",
    "CPU s per process: user + system time over the measurement (/proc). Throttled: the share of the "
    "CFS periods in which the process was runnable that ended at its quota; near 100 % the quota is its "
    "limit.",
    "CPU ceiling (cpu jobs): workers x quota / CPU per job, what the workers could do with nothing else "
    "to run.",
    "PostgreSQL commits/s and CPU s: pg_stat_database of the run's database (flushed about once a second, so "
    "approximate) over the headline window, and the CPU time of its server processes.",
]
