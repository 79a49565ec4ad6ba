"""What the scale-out and soak modes (bench/scaleout, bench/soak) share: their options, the run's
folder, Ctrl-C, waiting for callbacks, and the report files.

Both run apart from `python -m bench.suite` and its plan, on the same pieces: the load generator,
the receiver, the correctness gate, the metrics and the systems' processes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop
from bench.suite import gate, loadgen, procs, report
from bench.suite.infra import Infra
from bench.suite.receiver import Receiver
from bench.suite.systems.base import Env

log = logging.getLogger("bench")
RESULTS = procs.REPO / "bench" / "results"
WARMUP_TIMEOUT_S = 120.0


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batchgate-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra option for every batchgate process, e.g. --batchgate-arg=--max-batches=2 (repeatable)",
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes (bench/results)")
    parser.add_argument("--name", help="file name of the report, without extension (MODE-UTCSTAMP)")
    parser.add_argument("--work-dir", type=Path, help="where the run's temporary folder goes (the system's)")
    parser.add_argument("--keep-work", action="store_true", help="keep the databases' folder and the logs")


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Runs the mode on uvloop; Ctrl-C or SIGTERM cancels it, so that its clean-up stops every process
    and removes every cgroup and database it made (a second signal is only logged)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    async def cancellable() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def interrupted() -> None:
            task.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(
                    signum, log.warning, "still cleaning up: processes, cgroups, databases"
                )

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, interrupted)
        return await main()

    try:
        return uvloop.run(cancellable())
    except asyncio.CancelledError:
        print("interrupted: every process the run started has been stopped", file=sys.stderr)
        return 130


class WorkDir:
    """The run's temporary folder (databases, every process's log), removed at the end unless kept."""

    def __init__(self, parent: Path | None, keep: bool) -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="batchgate-bench-", dir=parent))
        (self.path / "logs").mkdir()
        self.keep = keep

    def close(self) -> None:
        if self.keep:
            log.info("kept the work folder %s", self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def make_env(work_dir: Path, pg_url: str) -> Env:
    """The Env of the systems: no upstream stub and no Redis (no http jobs, no alternatives)."""
    return Env(
        work_dir=work_dir,
        infra=Infra(redis_url="", pg_url=pg_url),
        stub_url="",
        gateway_config=False,
        key="",
        secret="",
    )


def stem(out: Path, name: str | None, mode: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out / (name or f"{mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def meta(notes: list[str]) -> dict[str, Any]:
    return {
        "started_at": now(),
        "finished_at": None,
        "duration_s": None,
        "machine": report.machine(),
        "notes": notes,
    }


def write(data: dict[str, Any], where: Path, markdown: Callable[[dict[str, Any]], str]) -> list[Path]:
    """The JSON (every raw measurement) and the Markdown report; `.partial.json` while it runs."""
    written = [where.with_suffix(".json"), where.with_suffix(".md")]
    written[0].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    written[1].write_text(markdown(data))
    where.with_suffix(".partial.json").unlink(missing_ok=True)
    return written


def checkpoint(data: dict[str, Any], where: Path) -> None:
    where.with_suffix(".partial.json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )


async def wait_callbacks(
    receiver: Receiver, ids: set[str], *, dead: Callable[[], str | None], timeout_s: float, stall_s: float
) -> str | None:
    """Until a callback of every id has arrived (None), or why waiting stopped: the time is up, a
    process died, or no callback at all arrived for `stall_s` (a lost one never comes)."""
    deadline = time.monotonic() + timeout_s
    arrived, last_progress = receiver.mark(), time.monotonic()
    while not await receiver.wait_for(ids, 1.0):
        now_s = time.monotonic()
        if receiver.mark() != arrived:
            arrived, last_progress = receiver.mark(), now_s
        if (died := dead()) is not None:
            return died
        if now_s > deadline:
            return f"callbacks still missing after {timeout_s:.0f} s"
        if now_s - last_progress > stall_s:
            return f"no callback arrived for {stall_s:.0f} s"
    return None


def stopped_waiting(verdict: gate.Verdict, why: str | None) -> None:
    """Adds to the gate's verdict why the wait for callbacks ended early, if it did."""
    if why is not None:
        verdict.problems.append(f"stopped waiting: {why}")
        verdict.problem_count += 1
        verdict.ok = False


async def warm_up(
    gens: list[loadgen.LoadGen],
    body: Callable[[int], bytes],
    receiver: Receiver,
    dead: Callable[[], str | None],
) -> None:
    """One uncounted batch through each API process (batches -1, -2, ...), called back before the
    measurement: it proves the processes work and warms their connections."""
    ids = set()
    for n, gen in enumerate(gens, start=1):
        submit = await gen.submit(-n, body(-n))
        if submit.async_id is None:
            raise RuntimeError(f"the warm-up batch was refused: {submit.error}")
        ids.add(submit.async_id)
    why = await wait_callbacks(receiver, ids, dead=dead, timeout_s=WARMUP_TIMEOUT_S, stall_s=WARMUP_TIMEOUT_S)
    if why is not None:
        raise RuntimeError(f"the warm-up batch did not call back: {why}")
