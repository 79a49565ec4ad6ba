"""Scale-out on PostgreSQL: two API processes and three worker processes share one database, and
one worker is killed mid-run. Every batch must still complete, with every result and callback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from batchgate import webhooks
from batchgate.client import AsyncClient

import pg
from support import Receiver, eventually, free_port, receiver

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

BATCHGATE = str(Path(sys.executable).parent / "batchgate")
BATCHES = 100
JOBS = 200
ENV = {
    "BATCHGATE_CALLBACK_ALLOW": "127.0.0.1",
    "BATCHGATE_LEASE": "3",
    "BATCHGATE_POLL_INTERVAL": "0.5",
    "BATCHGATE_CALLBACK_TIMEOUT": "5",  # a callback lost with the killed worker is re-sent within 15 s
    "BATCHGATE_LOG_LEVEL": "warning",
}


class Cluster:
    """batchgate processes started from the installed command, each logging to its own file."""

    def __init__(self, db: str, logs: Path) -> None:
        self.db = db
        self.logs = logs
        self.env = {**os.environ, **ENV}
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def create_key(self) -> dict[str, str]:
        proc = await asyncio.create_subprocess_exec(
            BATCHGATE, "keys", "create", "--db", self.db, "--name", "scale", "--json",
            env=self.env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        key: dict[str, str] = orjson.loads(out)
        return key

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                BATCHGATE, *args, "--db", self.db, env=self.env, stdout=log, stderr=log
            )
        self.procs[name] = proc
        return proc

    async def serve(self, name: str) -> str:
        port = free_port()
        await self.start(name, "serve", "--no-worker", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/healthz") as response:
                        return response.status == 200
                return False

            await eventually(healthy, timeout_s=30)
        return url

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            tail = (self.logs / f"{name}.log").read_text()[-2000:]
            if tail.strip():
                print(f"--- {name} (exit {proc.returncode}) ---\n{tail}")


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with pg.fresh_database() as db:
        running = Cluster(db, tmp_path)
        try:
            yield running
        finally:
            await running.stop_all()


def batch_jobs(batch: int) -> list[dict[str, Any]]:
    return [
        {"namespace": "test", "action": "echo", "params": {"batch": batch, "job": job}} for job in range(JOBS)
    ]


async def submit_all(apis: list[AsyncClient], recv: Receiver) -> dict[int, str]:
    """Submits every batch, alternating between the API processes, a few requests at a time."""
    gate = asyncio.Semaphore(8)

    async def submit(batch: int) -> tuple[int, str]:
        async with gate:
            api = apis[batch % len(apis)]
            return batch, await api.run(batch_jobs(batch), callback_url=f"{recv.url}/cb/{batch}")

    return dict(await asyncio.gather(*(submit(batch) for batch in range(BATCHES))))


async def kill_the_busiest_worker(c: Cluster) -> int:
    """Once a worker process holds running batches, SIGKILLs the one that holds the most; returns
    how many it held. (Waiting for a number of callbacks first raced with fast workers:
    every batch could be done by then.)"""

    async def held_by_pid() -> dict[int, int]:
        rows = await pg.fetch(
            c.db, "SELECT lease_owner, count(*) AS held FROM batches WHERE status = 'running' GROUP BY 1"
        )
        return {int(row["lease_owner"].split(":")[2]): int(row["held"]) for row in rows}

    held = await eventually(held_by_pid, until=bool, timeout_s=120)
    workers = [proc for name, proc in c.procs.items() if name.startswith("worker")]
    victim = max(workers, key=lambda proc: held.get(proc.pid, 0))
    victim.kill()
    await victim.wait()
    return held.get(victim.pid, 0)


def check_callbacks(recv: Receiver, ids: dict[int, str], results: dict[int, Any], secret: str) -> None:
    for batch in ids:
        calls = recv.received(f"/cb/{batch}")
        assert calls, f"no callback for batch {batch}"
        # One delivery per completed batch: repeats are retries of that same webhook-id.
        assert len({call.headers["webhook-id"] for call in calls}) == 1, f"batch {batch}"
        for call in calls:
            webhooks.verify(secret, call.headers, call.body)
            assert call.json == results[batch]


async def test_two_api_and_three_worker_processes_finish_every_batch_despite_a_killed_worker(
    tmp_path: Path,
) -> None:
    async with receiver() as recv, cluster(tmp_path) as c:
        key = await c.create_key()
        urls = [await c.serve(f"api{i}") for i in range(2)]
        for i in range(3):
            await c.start(f"worker{i}", "worker")
        apis = [AsyncClient(url, key["key"], key["secret"]) for url in urls]
        try:
            started = time.monotonic()
            submitting = asyncio.create_task(submit_all(apis, recv))
            held = await kill_the_busiest_worker(c)  # while batches are still being submitted
            ids = await submitting
            await eventually(lambda: len({call.path for call in recv.calls}) == BATCHES, timeout_s=180)
            elapsed = time.monotonic() - started
            results = {batch: await apis[batch % 2].results(async_id) for batch, async_id in ids.items()}
        finally:
            for api in apis:
                await api.close()
        for batch, async_id in ids.items():
            assert results[batch]["asyncId"] == async_id
            assert [(r["request"], r["response"]) for r in results[batch]["results"]] == [
                (job["params"], job["params"]) for job in batch_jobs(batch)
            ]
        check_callbacks(recv, ids, results, key["webhookSecret"])
    print(
        f"\nscale-out: {BATCHES}x{JOBS} jobs through 2 API + 3 worker processes, one killed holding "
        f"{held} batches: {elapsed:.1f} s ({BATCHES * JOBS / elapsed:.0f} jobs/s)"
    )
