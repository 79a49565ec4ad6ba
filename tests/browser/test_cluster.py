"""The console of a cluster on PostgreSQL, in Chromium: two API processes (`batchgate serve
--no-worker`, the first with the admin listener) and two `batchgate worker` processes on one fresh
database. The console shows the work of all of them, and a cancel clicked in it stops a batch that
a worker in another process is running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from batchgate.client import AsyncClient

import pg
from support import eventually, free_port

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture says so, and fails in CI
    expect = None

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

BATCHGATE = str(Path(sys.executable).parent / "batchgate")
TOKEN = "cluster-admin-token"
ENV = {
    "BATCHGATE_CALLBACK_ALLOW": "127.0.0.1",
    "BATCHGATE_LEASE": "3",
    "BATCHGATE_POLL_INTERVAL": "0.5",
    "BATCHGATE_MAX_BATCHES": "2",  # each worker runs two batches at once: both must take work
    "BATCHGATE_ADMIN_TOKEN": TOKEN,
    "BATCHGATE_LOG_LEVEL": "warning",
}


class Cluster:
    """batchgate processes from the installed command, each logging to its own file."""

    def __init__(self, db: str, logs: Path) -> None:
        self.db, self.logs = db, logs
        self.env = {**os.environ, **ENV}
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                BATCHGATE, *args, "--db", self.db, env=self.env, stdout=log, stderr=log
            )
        self.procs[name] = proc
        return proc

    async def serve(self, name: str, *options: str) -> str:
        port = free_port()
        await self.start(name, "serve", "--no-worker", "--port", str(port), *options)
        return await healthy(f"http://127.0.0.1:{port}")

    async def create_key(self, account: str) -> dict[str, str]:
        proc = await asyncio.create_subprocess_exec(
            BATCHGATE, "keys", "create", "--db", self.db, "--name", account, "--json",
            env=self.env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        created: dict[str, str] = orjson.loads(out)
        return created

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


async def healthy(url: str, path: str = "/healthz") -> str:
    async with aiohttp.ClientSession() as session:

        async def answers() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + path) as response:
                    return response.status < 500
            return False

        await eventually(answers, timeout_s=30)
    return url


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with pg.fresh_database() as db:
        running = Cluster(db, tmp_path)
        try:
            yield running
        finally:
            await running.stop_all()


def echoes(count: int, tag: int) -> list[dict[str, Any]]:
    return [{"namespace": "test", "action": "echo", "params": {"n": n, "tag": tag}} for n in range(count)]


def sleeps(count: int, seconds: float, tag: int) -> list[dict[str, Any]]:
    """Sleeps, the first tagged so each batch is a request of its own (no replay)."""
    jobs = [{"namespace": "test", "action": "sleep", "params": {"seconds": seconds}} for _ in range(count)]
    return [{"namespace": "test", "action": "echo", "params": {"tag": tag}}, *jobs]


async def batch_status(db: str, batch_id: str) -> str:
    (row,) = await pg.fetch(db, "SELECT status FROM batches WHERE id = $1", batch_id)
    return str(row["status"])


async def test_the_console_shows_the_work_of_two_api_and_two_worker_processes(
    tmp_path: Path,
    page: Any,
    log_in: Callable[..., Awaitable[None]],
    screenshot: Callable[..., Awaitable[None]],
) -> None:
    """Batches submitted through both API processes are listed; both workers are alive, with the
    batches each holds; a cancel reaches the worker process running the batch."""
    async with cluster(tmp_path) as c:
        admin_port = free_port()
        urls = [await c.serve("api0", "--admin-port", str(admin_port)), await c.serve("api1")]
        admin = await healthy(f"http://127.0.0.1:{admin_port}", "/login")
        metrics_port = free_port()
        workers = [
            await c.start("worker0", "worker"),
            await c.start("worker1", "worker", "--metrics-port", str(metrics_port)),
        ]
        keys = [await c.create_key("acme"), await c.create_key("globex")]
        clients = [AsyncClient(url, key["key"], key["secret"]) for url, key in zip(urls, keys, strict=True)]
        try:
            quick = [await clients[n % 2].run(echoes(20 + n, n)) for n in range(6)]
            slow = [await clients[n % 2].run(sleeps(8, 3, n)) for n in range(4)]

            async def held_by_both() -> bool:
                rows = await pg.fetch(
                    c.db, "SELECT DISTINCT lease_owner FROM batches WHERE status = 'running'"
                )
                return len(rows) == 2

            await eventually(held_by_both, timeout_s=30)  # each worker runs batches of its own

            await log_in(page, admin, TOKEN, "oncall")
            table = page.locator("[data-live-part=table]")
            for batch_id in quick + slow:  # submitted through either API process
                await expect(table.locator(f"a[href='/batches/{batch_id}']")).to_be_visible()
            await expect(table).to_contain_text("globex")
            await expect(table).to_contain_text("acme")

            await page.click("nav >> text=System")
            rows = page.locator("tr.worker")
            await expect(rows).to_have_count(2)
            for proc in workers:
                await expect(page.locator("tr.worker", has_text=str(proc.pid))).to_have_count(1)
            await expect(page.locator(".stat", has_text="Workers alive")).to_contain_text("2")
            await expect(page.locator("tr.worker a.id").first).to_be_visible()  # what they hold
            await screenshot(page, "system")

            victim = slow[0]
            owner = (await pg.fetch(c.db, "SELECT lease_owner FROM batches WHERE id = $1", victim))[0][0]
            assert owner is not None, "the batch to cancel is running in a worker process"
            await page.goto(f"{admin}/batches/{victim}")
            await page.locator(".actions button", has_text="Cancel").click()
            await page.locator("dialog.confirm [data-confirm-yes]").click()
            await expect(page.locator("h1 .badge")).to_have_text("cancelled", timeout=20_000)
            assert await batch_status(c.db, victim) == "cancelled"

            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                aiohttp.ClientSession(headers=bearer) as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as scraped,
            ):
                assert "batchgate_workers_alive 2.0" in await scraped.text()  # a worker's own listener
            for batch_id in quick + slow[1:]:
                await eventually(
                    lambda b=batch_id: batch_status(c.db, b), until="complete".__eq__, timeout_s=60
                )
        finally:
            for client in clients:
                await client.close()
