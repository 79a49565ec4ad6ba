"""Event lines: standard-library records until `configure`, then structlog's own lines on
standard error, JSON or console, with the same fields as every other record's. Each case runs in
a fresh interpreter: `configure` sets up the process's logging."""

from __future__ import annotations

import json
import re
import subprocess
import sys

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
