"""The benchmark harness (bench/suite) works and its correctness gate voids bad runs.

Not a benchmark: nothing here asserts a timing. The gate is fed crafted receiver records, and the
harness runs once in its `--tiny` mode on batchgate-on-SQLite (3 batches of 20 jobs), whatever
of the bench extra is installed, and once more with a duplicated callback injected.
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
from bench.suite.workload import Workload

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
    code, report, markdown = run_harness(tmp_path)
    cells = report["cells"]
    assert code == 0, [cell["gate"] for cell in cells]
    assert {cell["shape"] for cell in cells} == {"burst", "solo"}
    for cell in cells:
        assert cell["gate"]["ok"], cell["gate"]
        batches = report["plan"]["solo_batches"] if cell["shape"] == "solo" else report["plan"]["batches"]
        assert cell["gate"]["jobs_checked"] == batches * report["plan"]["jobs_per_batch"]
        assert cell["metrics"]["e2e_p50_ms"] is not None
    assert "| BG-S |" in markdown
    assert "VOID" not in markdown


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
