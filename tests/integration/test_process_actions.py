"""Actions registered with process=True run in worker processes, which a timeout or a cancel stops."""

from __future__ import annotations

import os
from pathlib import Path

from batchgate.protocol import errors
from batchgate.settings import Settings
from process_actions import app

from support import eventually, live_server


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_process_action_answers_from_another_process(settings: Settings) -> None:
    async with live_server(settings, app) as server, server.client() as api:
        direct = await api.call("cpu", "sum", {"n": 1000})
        async_id = await api.run([{"namespace": "cpu", "action": "sum", "params": {"n": 10}}])
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    assert direct["sum"] == sum(i * i for i in range(1000)) and direct["pid"] != os.getpid()
    assert results[0]["response"]["sum"] == 285


async def test_a_process_action_past_its_timeout_is_stopped(settings: Settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with live_server(settings, app) as server, server.client() as api:
        jobs = [
            {"namespace": "cpu", "action": "hang", "params": {"pid_file": str(pid_file)}},
            {"namespace": "cpu", "action": "sum", "params": {"n": 3}},
        ]
        results = (await api.wait(await api.run(jobs), poll_s=0.02, timeout_s=30))["results"]
        pid = int(pid_file.read_text())
        await eventually(lambda: alive(pid), until=lambda living: not living, timeout_s=10)
    assert (results[0]["response"]["errorCode"], results[0]["response"]["specificCode"]) == (
        461,
        errors.JOB_TIMED_OUT,
    )
    assert results[1]["response"]["sum"] == 5  # a new process took over


async def test_a_cancel_stops_a_process_action_in_flight(settings: Settings, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with live_server(settings, app) as server, server.client() as api:
        job = {"namespace": "cpu", "action": "hang_long", "params": {"pid_file": str(pid_file)}}
        async_id = await api.run([job])
        await eventually(pid_file.exists, timeout_s=20)
        pid = int(pid_file.read_text())
        assert await api.cancel(async_id)
        await eventually(lambda: alive(pid), until=lambda living: not living, timeout_s=5)
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    assert results[0]["response"]["specificCode"] == errors.JOB_CANCELLED
