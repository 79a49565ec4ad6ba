"""The benchmark harness (bench/suite) works and its correctness gate voids bad runs.

Not a benchmark: nothing here asserts a timing. The gate is fed crafted receiver records, the
targets made-up medians, and the harness runs once in its `--tiny` mode on batchgate-on-SQLite
(3 batches of 20 jobs; BG-SC's noop burst beside it), whatever of the bench extra is installed, and
once more with a duplicated callback injected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench.suite import gate, limits
from bench.suite import report as report_module
from bench.suite.plan import ALL_SYSTEMS, Plan
from bench.suite.receiver import Arrival
from bench.suite.systems import all_systems
from bench.suite.workload import Workload, run_call_body

REPO = Path(__file__).resolve().parents[2]
BATCHES = 3
JOBS = 5


def workload() -> Workload:
    return Workload("noop", JOBS, "http://127.0.0.1:9/cb")


def good_body(async_id: str, jobs: list[dict[str, Any]]) -> bytes:
    results = [
        {
            "namespace": job["namespace"],
            "action": job["action"],
            "request": job["params"],
            "response": {"echo": job["params"], "started": 1.0, "finished": 1.0},
        }
        for job in jobs
    ]
    return orjson.dumps({"asyncId": async_id, "results": results})


def good_run() -> tuple[dict[int, list[dict[str, Any]]], dict[str, int], list[Arrival]]:
    """What a correct system leaves: every batch accepted once and called back once."""
    load = workload()
    expected = {b: load.jobs(b) for b in range(BATCHES)}
    accepted = {f"id{b}": b for b in expected}
    records = [Arrival(f"id{b}", float(b), good_body(f"id{b}", expected[b])) for b in expected]
    return expected, accepted, records


def test_the_gate_passes_a_good_run() -> None:
    expected, accepted, records = good_run()
    verdict = gate.check(expected, accepted, records)
    assert verdict.ok, verdict.problems
    assert (verdict.callbacks, verdict.jobs_checked) == (BATCHES, BATCHES * JOBS)


def test_the_gate_voids_a_missing_callback() -> None:
    expected, accepted, records = good_run()
    verdict = gate.check(expected, accepted, records[1:])
    assert not verdict.ok
    assert any("never called back" in problem for problem in verdict.problems)


def test_the_gate_voids_a_duplicated_callback() -> None:
    expected, accepted, records = good_run()
    verdict = gate.check(expected, accepted, [*records, records[0]])
    assert not verdict.ok
    assert any("called back 2 times" in problem for problem in verdict.problems)


def test_the_gate_voids_a_callback_for_a_batch_it_never_sent() -> None:
    expected, accepted, records = good_run()
    stranger = Arrival("elsewhere", 9.0, good_body("elsewhere", expected[0]))
    assert not gate.check(expected, accepted, [*records, stranger]).ok


def test_the_gate_voids_a_failed_submit() -> None:
    expected, accepted, records = good_run()
    del accepted["id2"]
    verdict = gate.check(expected, accepted, records[:2], submit_errors=["batch 2: HTTP 500"])
    assert not verdict.ok
    assert any("accepted 0 times" in problem for problem in verdict.problems)


def _tampered(records: list[Arrival], change: str) -> list[Arrival]:
    body = orjson.loads(records[1].body)
    results = body["results"]
    if change == "job missing":
        results.pop()
    elif change == "job twice":
        results[1] = results[0]
    elif change == "error response":
        results[2]["response"] = {"errorCode": 500, "message": "boom", "specificCode": None}
    elif change == "results out of order":
        results.reverse()
    elif change == "not json":
        return [records[0], Arrival(records[1].async_id, 1.0, b"<html>"), *records[2:]]
    return [records[0], Arrival(records[1].async_id, 1.0, orjson.dumps(body)), *records[2:]]


@pytest.mark.parametrize(
    "change", ["job missing", "job twice", "error response", "results out of order", "not json"]
)
def test_the_gate_voids_a_callback_without_every_job_once(change: str) -> None:
    expected, accepted, records = good_run()
    verdict = gate.check(expected, accepted, _tampered(records, change))
    assert not verdict.ok, change


def run_harness(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--tiny", "--systems", "BG-S", "--out", str(tmp_path),
         "--name", "tiny", "--work-dir", str(tmp_path), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    report = tmp_path / "tiny.json"
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, orjson.loads(report.read_bytes()), (tmp_path / "tiny.md").read_text()


def test_a_tiny_run_passes_the_gate_and_writes_the_report(tmp_path: Path) -> None:
    code, report, markdown = run_harness(tmp_path, "--systems", "BG-S,BG-S0,BG-SC")
    cells = report["cells"]
    assert code == 0, [cell["gate"] for cell in cells]
    assert {(cell["system"], cell["shape"]) for cell in cells} == {
        ("BG-S", "burst"), ("BG-S", "solo"), ("BG-S0", "burst"), ("BG-SC", "burst")  # the noop burst only
    }  # fmt: skip
    unobserved = [cell for cell in cells if cell["system"] == "BG-S0"]
    cells = [cell for cell in cells if cell["system"] != "BG-S0"]
    # BG-S0 passes the same gate, with no admin listener to scrape
    assert [(cell["gate"]["ok"], cell.get("service_metrics")) for cell in unobserved] == [(True, None)]
    plan = report["plan"]
    for cell in cells:
        assert cell["gate"]["ok"], cell["gate"]
        batches = plan["solo_batches"] if cell["shape"] == "solo" else plan["batches"]
        assert cell["gate"]["jobs_checked"] == batches * plan["jobs_per_batch"]
        assert cell["metrics"]["e2e_p50_ms"] is not None
        # batchgate's own /metrics, scraped at the end of the cell, moved with it
        scraped = cell["service_metrics"]
        assert scraped["errors"] == [], scraped
        assert scraped["total"]["jobs_succeeded"] >= batches * plan["jobs_per_batch"]
        assert scraped["total"]["callbacks_delivered"] >= batches
        assert scraped["total"]["http_429"] == 0
        assert cell.get("run_options") == ({"concurrency": 50} if cell["system"] == "BG-SC" else None)
    assert "| BG-S |" in markdown
    assert "| BG-SC |" in markdown
    assert "| BG-S0 |" in markdown
    assert "VOID" not in markdown


def test_bg_s0_runs_batchgate_with_every_metric_update_a_no_op() -> None:
    script = (
        "from bench.suite.unobserved import silence; silence()\n"
        "from batchgate import metrics\n"
        "metrics.JOBS.labels(outcome='succeeded', action='test.ping', account='').inc()\n"
        "metrics.JOB_SECONDS.observe_many('test.ping', [0.5])\n"
        "metrics.LOOP_LAG.set(3)\n"
        "print(metrics.REGISTRY.get_sample_value('batchgate_job_duration_seconds_count',"
        " {'action': 'test.ping'}), metrics.REGISTRY.get_sample_value('batchgate_event_loop_lag_seconds'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["None", "0.0"], done.stdout + done.stderr
    systems = {system.id: system for system in all_systems()}
    assert getattr(systems["BG-S0"], "observed", None) is False
    assert getattr(systems["BG-S"], "observed", None) is True


def test_bg_sc10_asks_for_concurrency_10_at_the_default_batches_in_flight() -> None:
    """BG-SC10 is compared with BG-S alone: the same 50 batches in flight, each 10 jobs at a time
    (the others are capped at 50 jobs in flight), and it runs the io10 burst and solo only."""
    systems = {system.id: system for system in all_systems()}
    concurrent, sequential, capped = systems["BG-SC10"], systems["BG-S"], systems["BG-SC"]
    assert concurrent.run_options == {"concurrency": 10} and not sequential.run_options
    assert getattr(concurrent, "max_batches", None) == getattr(sequential, "max_batches", None) == 50
    assert getattr(capped, "max_batches", None) == 1  # 50 concurrent jobs of one batch
    cells = Plan(reps=1).cells(["BG-S", "BG-SC10"])
    only = {(c.kind, c.shape.label) for c in cells if c.system == "BG-SC10"}
    assert only == {("io10", "burst"), ("io10", "solo")}


def test_a_tiny_run_with_a_duplicated_callback_is_void(tmp_path: Path) -> None:
    code, report, markdown = run_harness(tmp_path, "--shapes", "burst", "--inject-fault", "duplicate")
    assert code == 2
    [cell] = report["cells"]
    assert not cell["gate"]["ok"]
    assert any("called back 2 times" in problem for problem in cell["gate"]["problems"])
    assert "**VOID**" in markdown


def test_limits_measured_once_per_repetition_are_reported_as_median_and_range() -> None:
    runs = [
        {"rep": 1, "hello_per_s": 9000, "method": "pgbench", "sqlite": {"tx_per_s": 5000}},
        {"rep": 2, "hello_per_s": 16000, "method": "pgbench", "sqlite": {"tx_per_s": 6000}},
        {"rep": 3, "hello_per_s": 15000, "method": "pgbench", "sqlite": {"tx_per_s": 7000}},
    ]
    combined = limits.combine(runs)
    assert combined == {"hello_per_s": 15000, "method": "pgbench", "sqlite": {"tx_per_s": 6000}}
    table = "\n".join(report_module._limits_table(combined, runs))
    assert "| hello_per_s | 15,000 [9,000-16,000] |" in table
    assert "tx_per_s=6,000 [5,000-7,000]" in table


def test_every_planned_system_exists_and_the_peers_get_the_alternatives_shapes() -> None:
    assert [system.id for system in all_systems()] == list(ALL_SYSTEMS)
    assert {"SAQ-D", "SAQ-T", "PRO-D", "PRO-T"} <= set(Plan.preset("quick").systems)
    cells = Plan(reps=1).cells(["CEL-D", "CEL-T", "SAQ-D", "SAQ-T", "PRO-D", "PRO-T"])
    shapes = {s: {(c.kind, c.shape.label) for c in cells if c.system == s} for s in ALL_SYSTEMS}
    assert shapes["SAQ-D"] == shapes["PRO-D"] == shapes["CEL-D"] == {("noop", "burst"), ("noop", "solo")}
    assert shapes["SAQ-T"] == shapes["PRO-T"] == shapes["CEL-T"]
    assert ("noop", "run") not in shapes["SAQ-T"]  # run calls/s is batchgate's alone
    compared = {target["target"] for target in report_module.targets([], {})}
    assert {"noop burst jobs/s, BG-S / SAQ-T", "noop solo submit->callback p50, BG-S / PRO-T"} <= compared


def test_bg_sc_bodies_carry_concurrency_and_differ_from_the_others_by_that_field_alone() -> None:
    systems = {system.id: system for system in all_systems()}
    concurrent, default = systems["BG-SC"], systems["BG-S"]
    assert concurrent.run_options == {"concurrency": 50}
    assert default.run_options == {}
    assert systems["CEL-T"].run_options == {}
    # at most 50 jobs in flight (BENCH.md, fairness): one batch of 50 concurrent jobs at a time
    assert getattr(concurrent, "max_batches", None) == 1
    load = Workload("io10", JOBS, "http://127.0.0.1:9/cb")
    plain = load.for_cell("7", range(2), default.run_options)
    with_concurrency = load.for_cell("7", range(2), concurrent.run_options)
    for batch in (-1, 0, 1):
        body = with_concurrency.body(batch)
        assert orjson.loads(body)["concurrency"] == 50
        assert body == plain.body(batch)[:-1] + b',"concurrency":50}'
    assert orjson.loads(run_call_body(3, concurrent.run_options))["concurrency"] == 50
    assert run_call_body(3) == run_call_body(3, default.run_options)


def test_the_plan_has_io10_solo_for_every_compared_system_and_bg_sc_where_concurrency_shows() -> None:
    full = Plan(reps=1)
    cells = full.cells(list(ALL_SYSTEMS))
    shapes = {s: {(c.kind, c.shape.label) for c in cells if c.system == s} for s in ALL_SYSTEMS}
    for system in ("BG-S", "BG-SC", "BG-P1", "BG-P2", "CEL-T", "ARQ-T", "SAQ-T", "PRO-T"):
        assert {("io10", "burst"), ("io10", "solo")} <= shapes[system], system
    assert shapes["BG-SC"] == {
        ("noop", "burst"), ("io10", "burst"), ("io10", "solo"), ("http", "burst"), ("http", "solo")
    }  # fmt: skip
    assert ("io10", "solo") not in shapes["ARQ-D"] | shapes["CEL-TF"]  # -D and -TF: noop only
    assert shapes["BG-S0"] == {("noop", "burst"), ("noop", "run")}  # where observability could cost
    quick = Plan.preset("quick")
    assert quick.shapes["io10"] == ["burst", "solo"] and quick.solo_batches == 5
    quick_cells = quick.cells(quick.systems)
    assert {c.system for c in quick_cells if (c.kind, c.shape.label) == ("io10", "solo")} >= {
        "BG-S", "BG-SC", "ARQ-T"
    }  # fmt: skip


def _row(system: str, kind: str, shape: str, **medians: float) -> dict[str, Any]:
    summary = {metric: {"median": v, "min": v, "max": v, "n": 1} for metric, v in medians.items()}
    return {"system": system, "kind": kind, "shape": shape, **summary}


def test_the_targets_are_ratios_of_made_up_medians() -> None:
    rows = [
        _row("BG-S", "noop", "burst", jobs_per_s=10000, serve_peak_rss_mb=90),
        _row("CEL-T", "noop", "burst", jobs_per_s=500),  # 20x
        _row("ARQ-T", "noop", "burst", jobs_per_s=1000),  # 10x
        _row("SAQ-T", "noop", "burst", jobs_per_s=2500),  # 4x: not met
        _row("PRO-T", "noop", "burst", jobs_per_s=400),  # 25x
        _row("BG-S", "noop", "solo", e2e_p50_ms=10),
        _row("CEL-T", "noop", "solo", e2e_p50_ms=200),  # 0.05
        _row("ARQ-T", "noop", "solo", e2e_p50_ms=40),  # 0.25: not met
        _row("SAQ-T", "noop", "solo", e2e_p50_ms=100),  # 0.1
        _row("PRO-T", "noop", "solo", e2e_p50_ms=50),  # 0.2: met (<=)
        _row("BG-S", "noop", "run", calls_per_s=3000),  # / 5000 = 0.6
        _row("BG-S", "http", "burst", jobs_per_s=6000),  # / 10000 = 0.6: not met
        _row("BG-SC", "http", "burst", jobs_per_s=9000),  # 0.9, reported
        _row("BG-SC", "io10", "solo", e2e_p50_ms=60),  # / 150 = 0.4
        _row("BG-S", "io10", "solo", e2e_p50_ms=2100),  # 14, reported
        _row("ARQ-T", "io10", "solo", e2e_p50_ms=150),
        _row("BG-SC", "io10", "burst", jobs_per_s=4500),  # / 1500 (ARQ-T, the best) = 3: not met
        _row("BG-S", "io10", "burst", jobs_per_s=4200),  # 2.8, reported
        _row("BG-SC10", "io10", "burst", jobs_per_s=16800),  # / 4200 (BG-S) = 4: not met
        _row("BG-SC10", "io10", "solo", e2e_p50_ms=252),  # / 2100 (BG-S) = 0.12, reported
        _row("ARQ-T", "io10", "burst", jobs_per_s=1500),
        _row("CEL-T", "io10", "burst", jobs_per_s=500),
        _row("SAQ-T", "io10", "burst", jobs_per_s=1200),
        _row("BG-P1", "noop", "burst", jobs_per_s=4000),
        _row("BG-P2", "noop", "burst", jobs_per_s=3000),  # 0.75, reported
        _row("BG-S0", "noop", "burst", jobs_per_s=10500),  # 10000 / 10500 = 0.952
        _row("BG-S0", "noop", "run", calls_per_s=4000),  # 3000 / 4000 = 0.75: not met
    ]
    limits_found = {
        "sqlite_wal_full_1_row": {"tx_per_s": 5000, "rows_per_s": 5000},  # a commit: 0.2 ms
        "http_round_trip_p50_us": 300.0,  # 0.3 ms: the floor is 0.5 ms, and 10 ms is 20x it
        "aiohttp_client_to_stub_per_s": 10000,
    }
    found = {t["target"]: t for t in report_module.targets(rows, limits_found, jobs_per_batch=200)}

    def check(name: str, value: float | None, goal: str, met: bool | None) -> dict[str, Any]:
        target = found[name]
        assert (target["value"], target["goal"], target["met"]) == (value, goal, met), target
        return target

    check("noop burst jobs/s, BG-S / CEL-T", 20.0, ">= 5", True)
    check("noop burst jobs/s, BG-S / ARQ-T", 10.0, ">= 5", True)
    check("noop burst jobs/s, BG-S / SAQ-T", 4.0, ">= 5", False)
    check("noop burst jobs/s, BG-S / PRO-T", 25.0, ">= 5", True)
    check("noop solo submit->callback p50, BG-S / CEL-T", 0.05, "<= 0.2", True)
    check("noop solo submit->callback p50, BG-S / ARQ-T", 0.25, "<= 0.2", False)
    check("noop solo submit->callback p50, BG-S / SAQ-T", 0.1, "<= 0.2", True)
    check("noop solo submit->callback p50, BG-S / PRO-T", 0.2, "<= 0.2", True)
    check("run calls/s (BG-S) / raw SQLite 1-row commits/s (WAL, FULL)", 0.6, ">= 0.5", True)
    check("http burst jobs/s (BG-S) / bare aiohttp client loop to the stub", 0.6, ">= 0.8", False)
    check("http burst jobs/s (BG-SC) / bare aiohttp client loop to the stub", 0.9, "reported", None)
    floor = check(
        "noop solo submit->callback p50 (BG-S) / (1 raw commit + 1 raw HTTP round trip)", 20.0, "<= 5", False
    )
    assert "0.200 ms" in floor["basis"] and "0.300 ms" in floor["basis"] and "= 0.500 ms" in floor["basis"]
    assert "200-job" in floor["basis"]
    check("io10 solo submit->callback p50, BG-SC / ARQ-T", 0.4, "<= 0.5", True)
    check("io10 solo submit->callback p50, BG-S / ARQ-T", 14.0, "reported", None)
    best = check("io10 burst jobs/s, BG-SC / the best tuned peer", 3.0, ">= 5", False)
    assert "ARQ-T (1,500 jobs/s)" in best["basis"]
    check("io10 burst jobs/s, BG-S / the best tuned peer", 2.8, "reported", None)
    check("io10 burst jobs/s, concurrency 10 / sequential", 4.0, ">= 5", False)
    check("io10 burst jobs/s, concurrency 10 / noop burst", 1.68, "reported", None)  # 16800 / 10000
    check("io10 solo submit->callback p50, concurrency 10 / sequential", 0.12, "reported", None)
    check(
        "io10 burst: this host's bound on concurrency 10 / sequential", 2.381, "reported", None
    )  # 10000 / 4200
    scale = check("noop burst jobs/s, PostgreSQL 2 workers / 1 worker", 0.75, "reported", None)
    assert "bench/scaleout" in scale["basis"]
    check("noop burst jobs/s with observability on / off", 0.952, ">= 0.9", True)  # rounded
    check("run calls/s with observability on / off", 0.75, ">= 0.9", False)
    check("peak RSS of `batchgate serve` during the noop burst (MB)", 90, "< 150", True)
    assert len(found) == 24
    # nothing measured: every value None, every goal's `met` None
    assert all(t["value"] is None and t["met"] is None for t in report_module.targets([], {}))
