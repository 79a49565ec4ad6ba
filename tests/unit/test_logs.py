"""Event lines: standard-library records until `configure`, then structlog's own lines on
standard error, JSON or console, with the same fields as every other record's. Each case runs in
a fresh interpreter: `configure` sets up the process's logging."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

from batchgate.logs import BufferedLines

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def stderr_of(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr.splitlines()


def test_json_lines_carry_the_event_its_facts_level_logger_and_utc_time() -> None:
    lines = stderr_of(
        "import logging\n"
        "from batchgate import logs\n"
        "logs.configure(level='info', json=True)\n"
        "logs.events.debug('not written')\n"
        "logs.events.info('batch accepted', asyncId='a1', account='acme', jobs=2)\n"
        "logs.events.warning('callback attempt failed', **{'webhook-id': 'msg_1', 'status': None})\n"
        "logs.events.info('client text', account='\\ud800')\n"  # a lone surrogate: orjson refuses it
        "logging.getLogger('uvicorn.error').info('from %s', 'uvicorn')\n"
    )
    accepted, failed, surrogate, uvicorn = (json.loads(line) for line in lines)
    assert accepted["event"] == "batch accepted" and accepted["level"] == "info"
    assert accepted["logger"] == "batchgate.events"
    assert (accepted["asyncId"], accepted["account"], accepted["jobs"]) == ("a1", "acme", 2)
    assert ISO_UTC.match(accepted["timestamp"]), accepted["timestamp"]
    assert failed["level"] == "warning" and failed["webhook-id"] == "msg_1" and failed["status"] is None
    assert surrogate["account"] == "\ud800"  # written escaped, not dropped
    assert uvicorn["event"] == "from uvicorn" and uvicorn["logger"] == "uvicorn.error"
    assert set(uvicorn) >= {"event", "level", "logger", "timestamp"}
    assert ISO_UTC.match(uvicorn["timestamp"])


def test_console_lines_are_readable_and_filtered_by_level() -> None:
    lines = stderr_of(
        "from batchgate import logs\n"
        "logs.configure(level='warning', json=False)\n"
        "logs.events.info('batch accepted', asyncId='a1')\n"
        "logs.events.warning('callback attempt failed', attempt=3)\n"
    )
    [line] = lines
    assert "callback attempt failed" in line and "attempt=3" in line and "warning" in line
    assert "batchgate.events" in line


def test_before_configure_event_lines_are_standard_library_records() -> None:
    """An application or a test that embeds batchgate sees them through its own logging."""
    lines = stderr_of(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr,\n"
        "                    format='%(name)s|%(levelname)s|%(message)s|%(asyncId)s|%(jobs)s')\n"
        "from batchgate import logs\n"
        "logs.events.info('batch accepted', asyncId='a1', jobs=2)\n"
        "logs.events.debug('not written', asyncId='a1', jobs=0)\n"
    )
    assert lines == ["batchgate.events|INFO|batch accepted|a1|2"]


class Recording:
    """A binary stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.arrived = asyncio.Event()

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        self.arrived.set()
        return len(data)

    def flush(self) -> None:
        pass


def test_in_an_event_loop_lines_go_out_together_after_the_interval() -> None:
    stream = Recording()
    lines = BufferedLines(stream, interval_s=0.3)  # type: ignore[arg-type]

    async def write_then_wait() -> tuple[list[bytes], list[bytes], float]:
        started = time.monotonic()
        lines.write(b"one\n")
        lines.write("two\n")  # console lines are text
        for _ in range(3):
            await asyncio.sleep(0)  # turns of the loop pass: the lines still wait
        before = list(stream.writes)
        await asyncio.wait_for(stream.arrived.wait(), 5)
        return before, list(stream.writes), time.monotonic() - started

    before, after, waited = asyncio.run(write_then_wait())
    assert (before, after) == ([], [b"one\ntwo\n"])
    assert waited >= 0.3
    lines.write(b"three\n")  # no loop: at once
    assert stream.writes[-1] == b"three\n"


def test_lines_go_out_at_once_when_too_many_wait() -> None:
    stream = Recording()
    lines = BufferedLines(stream, interval_s=60, max_bytes=10)  # type: ignore[arg-type]

    async def write() -> list[bytes]:
        lines.write(b"12345\n")
        lines.write(b"67890\n")  # 12 bytes wait: more than 10
        return list(stream.writes)

    assert asyncio.run(write()) == [b"12345\n67890\n"]


def test_lines_left_by_a_loop_that_ended_go_out_with_the_next_loops() -> None:
    stream = Recording()
    lines = BufferedLines(stream, interval_s=0.01)  # type: ignore[arg-type]

    async def write_and_end() -> None:
        lines.write(b"last of the first loop\n")  # the loop ends before its timer fires

    async def write_and_wait() -> None:
        lines.write(b"second loop\n")
        await asyncio.wait_for(stream.arrived.wait(), 5)

    asyncio.run(write_and_end())
    assert stream.writes == []
    asyncio.run(write_and_wait())
    assert b"".join(stream.writes) == b"last of the first loop\nsecond loop\n"


def test_a_forked_child_does_not_write_its_parents_lines_again() -> None:
    """A process action's child is forked with the lines its parent has not written yet."""
    stream = Recording()
    lines = BufferedLines(stream, interval_s=60)  # type: ignore[arg-type]
    reading, writing = os.pipe()

    async def fork_while_a_line_waits() -> int:
        lines.write(b"the parent's\n")
        return os.fork()

    pid = asyncio.run(fork_while_a_line_waits())
    if pid == 0:  # the child: what would it write at exit?
        try:
            lines.write_out()
            os.write(writing, b"".join(stream.writes) or b"nothing")
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as child:
        assert child.read() == b"nothing"
    os.waitpid(pid, 0)
    lines.write_out()
    assert stream.writes == [b"the parent's\n"]
