"""The machine's limits, measured in the same run as the systems (BENCH.md).

- raw uvicorn (httptools, uvloop) hello-world GET/s and 10 KB POST/s, from the same aiohttp load
  generator as the systems (50 requests in flight): on 2 cores the client is as much the limit
  as the server, which makes it the ceiling of what the harness itself can drive;
- loopback round trips: sequential HTTP GETs to that server, and 1-byte TCP ping-pongs;
- raw SQLite commit rates: WAL, 1 and 200 rows per transaction, synchronous FULL and NORMAL;
- PostgreSQL commit rate: pgbench with single-row INSERT transactions, 1 and 8 clients;
- a bare aiohttp client loop against the upstream stub (50 in flight): the ceiling for forwarding.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from bench.suite import infra, jobs, procs
from bench.suite.metrics import percentile

IN_FLIGHT = 50
ECHO_SERVER = """
import socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1]))); server.listen(1)
conn, _ = server.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(64):
    conn.sendall(data)
"""


async def _rate(
    session: aiohttp.ClientSession, method: str, url: str, body: bytes | None, seconds: float
) -> float:
    """Requests per second with IN_FLIGHT concurrent loops for `seconds`."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            async with session.request(method, url, data=body) as response:
                await response.read()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    return count / (time.perf_counter() - started)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=IN_FLIGHT),
        timeout=aiohttp.ClientTimeout(total=60),
        trust_env=False,
    )


async def http_limits(log_dir: Path, seconds: float, round_trips: int) -> dict[str, Any]:
    port = procs.free_port()
    server = await asyncio.to_thread(
        procs.uvicorn, "limits-hello", "bench.suite.servers:hello", port, log_dir
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        async with _session() as session:
            await _rate(session, "GET", url, None, min(0.5, seconds))  # warm-up
            get = await _rate(session, "GET", url, None, seconds)
            post = await _rate(session, "POST", url, b"x" * 10240, seconds)
            rtts = []
            for _ in range(round_trips):
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                rtts.append(time.perf_counter() - started)
    finally:
        await asyncio.to_thread(server.stop)
    return {
        "uvicorn_hello_get_per_s": round(get),
        "uvicorn_10kb_post_per_s": round(post),
        "http_round_trip_p50_us": round((percentile(rtts, 50) or 0) * 1e6, 1),
        "http_round_trip_p99_us": round((percentile(rtts, 99) or 0) * 1e6, 1),
    }


def tcp_round_trip(log_dir: Path, count: int) -> dict[str, Any]:
    port = procs.free_port()
    server = procs.spawn("limits-tcp-echo", [procs.PYTHON, "-c", ECHO_SERVER, str(port)], log_dir)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(count):
                started = time.perf_counter()
                client.sendall(b"x")
                client.recv(64)
                rtts.append(time.perf_counter() - started)
    finally:
        server.stop()
    return {
        "tcp_round_trip_p50_us": round((percentile(rtts, 50) or 0) * 1e6, 1),
        "tcp_round_trip_p99_us": round((percentile(rtts, 99) or 0) * 1e6, 1),
    }


def sqlite_commits(folder: Path, synchronous: str, rows: int, seconds: float) -> dict[str, float]:
    path = folder / f"raw-{synchronous.lower()}-{rows}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        transactions = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 60,)] * rows)
            conn.execute("COMMIT")
            transactions += 1
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return {"tx_per_s": round(transactions / elapsed), "rows_per_s": round(transactions * rows / elapsed)}


def sqlite_limits(folder: Path, seconds: float) -> dict[str, Any]:
    return {
        f"sqlite_wal_{sync.lower()}_{rows}_row{'s' if rows > 1 else ''}": sqlite_commits(
            folder, sync, rows, seconds
        )
        for sync in ("FULL", "NORMAL")
        for rows in (1, 200)
    }


async def postgres_limits(admin_url: str, seconds: float) -> dict[str, Any]:
    problem = await infra.pg_problem(admin_url)
    if problem:
        return {"postgres_commits": {"skipped": problem}}
    url = await infra.pg_create(admin_url, "bench_pgbench")
    try:
        conn_args = await asyncio.to_thread(_pgbench_prepare, url)
        found: dict[str, Any] = {
            "method": "pgbench, one INSERT per transaction" if conn_args else "asyncpg loop"
        }
        for clients in (1, 8):
            if conn_args:
                found[f"clients_{clients}_tx_per_s"] = await asyncio.to_thread(
                    _pgbench, url, clients, seconds
                )
            elif clients == 1:
                found["clients_1_tx_per_s"] = await _asyncpg_loop(url, seconds)
        return {"postgres_commits": found}
    finally:
        await infra.pg_drop(admin_url, url)


def _pgbench_prepare(url: str) -> bool:
    if shutil.which("pgbench") is None or shutil.which("psql") is None:
        return False
    subprocess.run(
        ["psql", "-q", "-d", url, "-c", "CREATE TABLE t (id bigserial PRIMARY KEY, v text)"],
        check=True,
        capture_output=True,
    )
    return True


def _pgbench(url: str, clients: int, seconds: float) -> float | None:
    script = Path(procs.REPO / "bench" / "suite" / "pgbench_insert.sql")
    done = subprocess.run(
        ["pgbench", "-n", "-f", str(script), "-c", str(clients), "-j", str(min(clients, 2)),
         "-T", str(max(1, round(seconds))), url],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    return round(float(match.group(1))) if match else None


async def _asyncpg_loop(url: str, seconds: float) -> float:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, v text)")
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await conn.execute("INSERT INTO t (v) VALUES ('x')")
            count += 1
        return round(count / (time.perf_counter() - started))
    finally:
        await conn.close()


async def stub_client_limit(stub_url: str, count: int) -> dict[str, Any]:
    """`count` POSTs of one job's params to the stub, 50 in flight, on one aiohttp session."""
    url = stub_url.rstrip("/") + jobs.STUB_PATH
    body = orjson.dumps({"b": 0, "j": 0})
    headers = {"Content-Type": "application/json"}
    pending = iter(range(count))
    async with _session() as session:

        async def loop() -> None:
            for _ in pending:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()

        for _ in range(min(200, count)):  # warm-up: connections opened
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
    return {"aiohttp_client_to_stub_per_s": round(count / elapsed)}


async def measure(
    work_dir: Path, log_dir: Path, stub_url: str, pg_admin_url: str, *, seconds: float, stub_calls: int
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    found.update(await http_limits(log_dir, seconds, round_trips=2000))
    found.update(await asyncio.to_thread(tcp_round_trip, log_dir, 5000))
    found.update(await asyncio.to_thread(sqlite_limits, work_dir, seconds))
    found.update(await postgres_limits(pg_admin_url, seconds))
    found.update(await stub_client_limit(stub_url, stub_calls))
    return found


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the repetitions' measurements (one per repetition, so that
    a noisy moment skews none of the ratios taken against them); text is kept as first seen."""
    combined: dict[str, Any] = {}
    for name in dict.fromkeys(name for run in runs for name in run if name != "rep"):
        values = [run[name] for run in runs if name in run]
        if all(isinstance(v, dict) for v in values):
            combined[name] = combine(values)
        elif all(isinstance(v, int | float) for v in values):
            middle = statistics.median(values)
            combined[name] = round(middle) if all(isinstance(v, int) for v in values) else round(middle, 1)
        else:
            combined[name] = values[0]
    return combined


def spread(runs: list[dict[str, Any]], name: str, key: str | None = None) -> tuple[float, float] | None:
    """The lowest and highest of one figure over the repetitions, when it was measured more than once."""
    values = [run[name] if key is None else run[name].get(key) for run in runs if name in run]
    numbers = [v for v in values if isinstance(v, int | float)]
    return (min(numbers), max(numbers)) if len(numbers) > 1 else None
