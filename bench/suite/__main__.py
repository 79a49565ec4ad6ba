"""python -m bench.suite: runs the benchmark (bench/run installs what it needs, then calls this).

Exit status: 0 when every measured cell passed the correctness gate, 2 when a cell was voided
(the report still gets written), 1 on a harness failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from bench.suite import chart, limits, procs, report
from bench.suite.infra import Infra
from bench.suite.plan import ALL_SYSTEMS, KIND_ORDER, Plan, Shape
from bench.suite.receiver import Receiver
from bench.suite.runner import Runner
from bench.suite.sampler import Sampler
from bench.suite.systems import Env, all_systems
from bench.suite.systems.batchgate import has_config_option
from bench.suite.workload import Workload

log = logging.getLogger("bench")
RESULTS = procs.REPO / "bench" / "results"
HTTP_FORWARDING = {True: "batchgate gateway mode (--config)", False: "a Python action"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="a few minutes: 10 batches, fewer shapes, 1 repetition"
    )
    mode.add_argument(
        "--tiny", action="store_true", help="seconds: BG-S, 3 batches of 20 jobs (the test's mode)"
    )
    parser.add_argument("--systems", help=f"comma-separated ids among {','.join(ALL_SYSTEMS)}")
    parser.add_argument("--kinds", help=f"comma-separated job kinds among {','.join(KIND_ORDER)}")
    parser.add_argument("--shapes", help="comma-separated shapes for every kind: burst,solo,run,paced@RATE")
    parser.add_argument("--batches", type=int, help="batches per burst or paced run (50)")
    parser.add_argument("--jobs", type=int, help="jobs per batch (200)")
    parser.add_argument("--solo-batches", type=int, help="batches of the solo shape (30)")
    parser.add_argument("--run-calls", type=int, help="1-job batches of the run calls/s measurement (2000)")
    parser.add_argument("--reps", type=int, help="repetitions (5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order (random)")
    parser.add_argument(
        "--all-shapes", action="store_true", help="every shape on the -D, -TF and BG-SC systems too (longer)"
    )
    parser.add_argument("--no-limits", action="store_true", help="skip the machine limits")
    parser.add_argument(
        "--inject-fault", choices=["drop", "duplicate"], help="prove the gate voids such runs"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="its database is FLUSHed")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes (bench/results)")
    parser.add_argument("--name", help="file name of the report, without extension (MODE-UTCSTAMP)")
    parser.add_argument("--work-dir", type=Path, help="where the run's temporary folder goes (the system's)")
    parser.add_argument("--keep-work", action="store_true", help="keep the databases' folder and the logs")
    parser.add_argument(
        "--report-only", type=Path, help="rewrite the Markdown and the chart from a JSON report"
    )
    parser.add_argument(
        "--resume", type=Path, help="finish an interrupted run from its .partial.json (same plan and seed)"
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = Plan.preset("quick" if args.quick else "tiny" if args.tiny else "full")
    if args.systems:
        plan.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        unknown = set(plan.systems) - set(ALL_SYSTEMS)
        if unknown:
            raise SystemExit(f"unknown systems {sorted(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    if args.kinds:
        plan.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        if set(plan.kinds) - set(KIND_ORDER):
            raise SystemExit(f"job kinds are {', '.join(KIND_ORDER)}")
    if args.shapes:
        shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
        for shape in shapes:
            Shape.parse(shape)
        plan.shapes = {kind: shapes for kind in KIND_ORDER}
    overrides = {"batches": "batches", "jobs": "jobs_per_batch", "solo_batches": "solo_batches"}
    overrides.update(run_calls="run_calls", reps="reps")
    for name, attribute in overrides.items():
        if getattr(args, name) is not None:
            setattr(plan, attribute, getattr(args, name))
    plan.seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    plan.limits = plan.limits and not args.no_limits
    if args.all_shapes or args.shapes:
        plan.defaults_shapes = plan.durable_shapes = plan.concurrent_shapes = None
    plan.inject_fault = args.inject_fault
    return plan


def notes(gateway_config: bool, skipped: dict[str, str]) -> list[str]:
    found = []
    if not gateway_config:
        found.append(
            "`batchgate serve --config` (gateway mode) is not in this batchgate yet: http jobs are forwarded "
            "by a Python action on one shared aiohttp session (bench/suite/actions.py)."
        )
    if not Sampler.available():
        found.append("psutil is not installed: no memory or CPU figures (pip install -e '.[bench]').")
    for system_id, reason in skipped.items():
        found.append(f"{system_id} skipped: {reason}")
    return found


def write_report(data: dict[str, Any], stem: Path) -> list[Path]:
    data["summary"] = report.summary(data["cells"])
    data["targets"] = report.targets(
        data["summary"], data.get("limits") or {}, jobs_per_batch=data["plan"].get("jobs_per_batch")
    )
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    title = f"batchgate benchmark, {data['plan']['mode']} run, {data['meta']['finished_at']}"
    why_not = chart.draw(data["summary"], list(data["systems"]), stem.with_suffix(".png"), title)
    if why_not:
        data["meta"]["notes"].append(f"no chart: {why_not}")
    else:
        written.append(stem.with_suffix(".png"))
    stem.with_suffix(".json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    stem.with_suffix(".md").write_text(report.markdown(data))
    return written


def fresh_data(plan: Plan, env: Env, skipped: dict[str, str], receiver_url: str) -> dict[str, Any]:
    return {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished_at": None,
            "duration_s": 0.0,
            "machine": report.machine(),
            "http_forwarding": HTTP_FORWARDING[env.gateway_config],
            "receiver_url": receiver_url,
            "notes": notes(env.gateway_config, skipped),
            "work_dir": str(env.work_dir),
        },
        "plan": plan.to_json(),
        "systems": {s: {"skipped": skipped[s]} if s in skipped else {} for s in plan.systems},
        "limits": {},
        "cells": [],
        "method": report.METHOD,
    }


def cell_key(cell: dict[str, Any]) -> tuple[Any, ...]:
    return (cell["rep"], cell["system"], cell["kind"], cell["shape"])


async def run(plan: Plan, args: argparse.Namespace, resumed: dict[str, Any] | None) -> int:
    started = time.monotonic()
    # SIGTERM and SIGINT cancel the run, so that every process it started is stopped on the way out
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="batchgate-bench-", dir=args.work_dir))
    (work_dir / "logs").mkdir()
    if args.resume:
        stem = args.resume.parent / args.resume.name.removesuffix(".partial.json")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / (args.name or f"{plan.mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    receiver = Receiver()
    # a resumed run keeps its callback URL when it can, so that its bodies stay byte-identical
    previous_url = urlsplit((resumed or {}).get("meta", {}).get("receiver_url", ""))
    await receiver.start(port=previous_url.port or 0)
    stub_port = procs.free_port()
    stub = await asyncio.to_thread(
        procs.uvicorn, "stub", "bench.suite.servers:stub", stub_port, work_dir / "logs"
    )
    keep_work = args.keep_work
    try:
        env = Env(
            work_dir=work_dir,
            infra=Infra(args.redis_url, args.pg_url),
            stub_url=f"http://127.0.0.1:{stub_port}",
            gateway_config=await asyncio.to_thread(has_config_option),
            key="bench",
            secret=secrets.token_urlsafe(24),
        )
        systems = {s.id: s for s in all_systems() if s.id in plan.systems}
        skipped: dict[str, str] = {}
        for system_id in plan.systems:
            problem = await systems[system_id].problem(env)
            if problem:
                skipped[system_id] = problem
                log.warning("%s is skipped: %s", system_id, problem)
        runnable = [s for s in plan.systems if s not in skipped]
        if resumed is None:
            data = fresh_data(plan, env, skipped, receiver.url)
        else:
            data = resumed
            data["meta"]["notes"].append(
                f"resumed at {datetime.now(UTC).isoformat(timespec='seconds')} with {len(data['cells'])} "
                f"measurements done"
            )
            if receiver.url != data["meta"]["receiver_url"]:
                data["meta"]["notes"].append(f"the resumed part called back to {receiver.url}")
            for system_id, reason in skipped.items():
                data["systems"][system_id] = {"skipped": reason}
                data["meta"]["notes"].append(f"{system_id} skipped when resumed: {reason}")
        # a run from before limits were measured per repetition holds one measurement
        data.setdefault("limits_runs", [{"rep": 1, **data["limits"]}] if data["limits"] else [])
        workloads = {kind: Workload(kind, plan.jobs_per_batch, receiver.url) for kind in plan.kinds}
        partial = stem.with_suffix(".partial.json")
        done_before = float(data["meta"].get("duration_s") or 0.0)

        def checkpoint() -> None:
            data["meta"]["duration_s"] = round(done_before + time.monotonic() - started, 1)
            partial.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))

        checkpoint()
        runner = Runner(plan, env, receiver, workloads, checkpoint, data["cells"])
        done = {cell_key(cell) for cell in data["cells"]}
        cells = [c for c in plan.cells(runnable) if (c.rep, c.system, c.kind, c.shape.label) not in done]
        log.info("%d cells on %s; work folder %s", len(cells), ", ".join(runnable) or "no system", work_dir)
        for rep in sorted({cell.rep for cell in cells}):
            if plan.limits and rep not in {run["rep"] for run in data["limits_runs"]}:
                log.info("measuring the machine's limits (repetition %d)", rep)
                measured = await limits.measure(
                    work_dir, work_dir / "logs", env.stub_url, args.pg_url,
                    seconds=plan.limit_seconds, stub_calls=plan.stub_calls,
                )  # fmt: skip
                log.info("limits: %s", orjson.dumps(measured).decode())
                data["limits_runs"].append({"rep": rep, **measured})
                data["limits"] = limits.combine(data["limits_runs"])
                checkpoint()
            await runner.run(systems, [c for c in cells if c.rep == rep], total=len(done) + len(cells))
        for system_id in runnable:
            if systems[system_id].starts or not data["systems"].get(system_id):  # else: as recorded before
                data["systems"][system_id] = {"settings": systems[system_id].settings()}
        checkpoint()
        data["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        written = write_report(data, stem)
        partial.unlink(missing_ok=True)
        void = [c for c in data["cells"] if not c["gate"]["ok"]]
        keep_work = keep_work or bool(void)
        print(report.markdown(data))
        for path in written:
            print(f"wrote {path}")
        if void:
            print(
                f"{len(void)} of {len(data['cells'])} runs were VOIDED by the correctness gate; "
                f"logs in {work_dir}"
            )
            return 2
        return 0
    finally:
        await asyncio.to_thread(stub.stop)
        await receiver.stop()
        if not keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)


def report_only(path: Path) -> int:
    data = orjson.loads(path.read_bytes())
    data["meta"].setdefault("notes", [])
    for written in write_report(data, path.with_suffix("")):
        print(f"wrote {written}")
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.report_only:
        return report_only(args.report_only)
    resumed = None
    if args.resume:
        resumed = orjson.loads(args.resume.read_bytes())
        plan = Plan(**resumed["plan"])
    else:
        plan = make_plan(args)
    try:
        return uvloop.run(run(plan, args, resumed))
    except asyncio.CancelledError:
        print("interrupted: every process the run started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
