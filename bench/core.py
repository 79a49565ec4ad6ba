"""Core numbers of one `batchgate serve` on SQLite, beside the raw SQLite commit rate of this machine.

    .venv/bin/python bench/core.py [--batches 50] [--jobs 200] [--submits 2000] [--solo 10]

Measures, against a real server process on loopback:
  run/s          `batch.run` calls per second (1-job batches, 8 connections), with p50/p99 latency
  echo jobs/s    50 batches x 200 `test.echo` jobs from 8 connections: jobs / (first submit -> last callback)
  solo latency   one 200-job batch at a time: submit -> callback, p50 and max
  sqlite commits single-row INSERT commits per second (WAL, synchronous=FULL), the ceiling for run/s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from batchgate.client import AsyncClient

BATCHGATE = str(Path(sys.executable).parent / "batchgate")
CONNECTIONS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sqlite_commit_rate(path: Path, seconds: float = 2.0) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    count, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("INSERT INTO t (v) VALUES ('x')")
        count += 1
    return count / (time.perf_counter() - started)


class Callbacks:
    """Records when each batch's callback arrives."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrived.setdefault(body["asyncId"], time.perf_counter())
        self.changed.set()
        return web.Response()

    async def wait_for(self, ids: list[str]) -> None:
        while not all(i in self.arrived for i in ids):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 120)


async def start_receiver(callbacks: Callbacks) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/cb", callbacks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/cb"


def start_server(db: str, port: int, log: Path, profile: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BATCHGATE_CALLBACK_ALLOW": "127.0.0.1", "BATCHGATE_LOG_LEVEL": "warning"}
    # py-spy samples the server (all threads, idle excluded) into a raw flame-graph file
    prefix = ["py-spy", "record", "--threads", "--format", "raw", "-o", profile, "--"] if profile else []
    proc = subprocess.Popen(
        [*prefix, BATCHGATE, "serve", "--db", db, "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(log.read_text())


async def run_rate(api: AsyncClient, total: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(total))

    async def submitter() -> None:
        for _ in queue:
            started = time.perf_counter()
            await api.run([{"namespace": "test", "action": "ping"}])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "run_per_s": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def echo_jobs(batch: int, count: int) -> list[dict[str, object]]:
    return [{"namespace": "test", "action": "echo", "params": {"b": batch, "j": j}} for j in range(count)]


async def burst(
    api: AsyncClient, callbacks: Callbacks, url: str, batches: int, jobs: int
) -> dict[str, float]:
    pending = iter(range(batches))
    ids: list[str] = []

    async def submitter() -> None:
        for b in pending:
            ids.append(await api.run(echo_jobs(b, jobs), callback_url=url))

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(CONNECTIONS)))
    await callbacks.wait_for(ids)
    elapsed = max(callbacks.arrived[i] for i in ids) - started
    return {"jobs_per_s": batches * jobs / elapsed, "seconds": elapsed}


async def solo(api: AsyncClient, callbacks: Callbacks, url: str, rounds: int, jobs: int) -> dict[str, float]:
    latencies = []
    for r in range(rounds):
        started = time.perf_counter()
        async_id = await api.run(echo_jobs(r, jobs), callback_url=url)
        await callbacks.wait_for([async_id])
        latencies.append(callbacks.arrived[async_id] - started)
        await asyncio.sleep(0.2)
    return {"p50_ms": statistics.median(latencies) * 1000, "max_ms": max(latencies) * 1000}


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bg-bench-") as tmp:
        folder = Path(tmp)
        commits = sqlite_commit_rate(folder / "raw.db")
        db = f"sqlite:///{folder / 'bench.db'}"
        key = json.loads(
            subprocess.run(
                [BATCHGATE, "keys", "create", "--db", db, "--name", "bench", "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        port = free_port()
        server = start_server(db, port, folder / "serve.log", args.profile)
        callbacks = Callbacks()
        runner, url = await start_receiver(callbacks)
        try:
            async with AsyncClient(f"http://127.0.0.1:{port}", key["key"], key["secret"]) as api:
                await burst(api, callbacks, url, 1, args.jobs)  # warm-up, not counted
                results: dict[str, object] = {
                    "sqlite_single_row_commits_per_s": round(commits),
                    "echo_burst": await burst(api, callbacks, url, args.batches, args.jobs),
                    "solo_200": await solo(api, callbacks, url, args.solo, args.jobs),
                    "run": await run_rate(api, args.submits),
                }
        finally:
            await runner.cleanup()
            os.killpg(server.pid, signal.SIGINT if args.profile else signal.SIGTERM)
            server.wait(30)
    run = results["run"]
    assert isinstance(run, dict)
    results["run_vs_sqlite_commits"] = round(run["run_per_s"] / commits, 3)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--solo", type=int, default=10)
    parser.add_argument("--profile", metavar="PATH", help="record the server with py-spy into PATH")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
