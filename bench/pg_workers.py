"""Jobs per second for `test.echo` batches: PostgreSQL with 1 and 2 worker processes beside an API
process, PostgreSQL and SQLite with `batchgate serve` alone, all in one run on this machine.

    .venv/bin/python bench/pg_workers.py [--batches 50] [--jobs 200] [--repeat 3]
                                         [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Each run starts the processes with the installed `batchgate` command on a fresh database, waits
until they are ready, then times from the first submit to the last callback (a loopback receiver
here). The figure is jobs / that time; the median of the runs is printed with all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import orjson
from aiohttp import web

from batchgate.client import AsyncClient

BATCHGATE = str(Path(sys.executable).parent / "batchgate")
ENV = {"BATCHGATE_CALLBACK_ALLOW": "127.0.0.1", "BATCHGATE_LOG_LEVEL": "warning"}


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str  # "sqlite" or "postgres"
    workers: int  # worker processes beside an API-only process; 0 means `serve` runs the worker


SETUPS = [
    Setup("postgres, serve --no-worker + 1 worker", "postgres", 1),
    Setup("postgres, serve --no-worker + 2 workers", "postgres", 2),
    Setup("postgres, serve alone", "postgres", 0),
    Setup("sqlite, serve alone", "sqlite", 0),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def database(backend: str, pg_base: str) -> AsyncIterator[str]:
    """A fresh database URL of the backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"bg_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(pg_base)._replace(path="/" + name))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Processes:
    def __init__(self, db: str) -> None:
        self.db = db
        self.env = {**os.environ, **ENV}
        self.procs: list[asyncio.subprocess.Process] = []

    async def run(self, *args: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            BATCHGATE, *args, "--db", self.db, env=self.env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"batchgate {' '.join(args)} exited {proc.returncode}")
        return out

    async def start(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(BATCHGATE, *args, "--db", self.db, env=self.env)
        self.procs.append(proc)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def listening_workers(db: str) -> int:
    conn = await asyncpg.connect(db)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchgate-listen'"
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def start(setup: Setup, procs: Processes) -> str:
    """Starts the setup's processes and returns the API's URL once everything is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker_flag = ["--no-worker"] if setup.workers else []
    await procs.start("serve", *worker_flag, "--port", str(port))
    for _ in range(setup.workers):
        await procs.start("worker")
    async with aiohttp.ClientSession() as session:

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/healthz") as response:
                    return response.status == 200
            return False

        await wait_until(healthy, 60, "the API did not answer")
    if setup.backend == "postgres":
        listeners = max(setup.workers, 1)
        await wait_until(
            lambda: _at_least(listening_workers(procs.db), listeners), 60, "the workers did not start"
        )
    return url


async def _at_least(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


@contextlib.asynccontextmanager
async def callbacks() -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    """A loopback receiver that queues every callback's body."""
    arrived: asyncio.Queue[bytes] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await arrived.put(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/cb", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/cb", arrived
    finally:
        await runner.cleanup()


async def one_run(setup: Setup, args: argparse.Namespace) -> float:
    """jobs/s of one run of the setup."""
    jobs = [{"namespace": "test", "action": "echo", "params": {"n": n}} for n in range(args.jobs)]
    async with database(setup.backend, args.pg) as db, callbacks() as (callback_url, arrived):
        procs = Processes(db)
        try:
            key = orjson.loads(await procs.run("keys", "create", "--name", "bench", "--json"))
            url = await start(setup, procs)
            async with AsyncClient(url, key["key"], key["secret"]) as api:
                gate = asyncio.Semaphore(8)

                async def submit() -> str:
                    async with gate:
                        return await api.run(jobs, callback_url=callback_url)

                started = time.perf_counter()
                ids = await asyncio.gather(*(submit() for _ in range(args.batches)))
                done: set[str] = set()
                while len(done) < len(ids):  # a repeated callback (a retry) counts once
                    done.add(orjson.loads(await asyncio.wait_for(arrived.get(), 120))["asyncId"])
                elapsed = time.perf_counter() - started
            assert done == set(ids), "a callback for an unknown batch"
            return args.batches * args.jobs / elapsed
        finally:
            await procs.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg", default=os.environ.get("BATCHGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    print(f"{args.batches} x {args.jobs} test.echo jobs, {args.repeat} runs each, {os.cpu_count()} CPUs")
    for setup in SETUPS:
        rates = [await one_run(setup, args) for _ in range(args.repeat)]
        runs = ", ".join(f"{rate:.0f}" for rate in rates)
        print(f"{setup.name:42s} {statistics.median(rates):7.0f} jobs/s  (runs: {runs})", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
