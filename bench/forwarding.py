"""Gateway mode's throughput: jobs per second forwarded by batchgate to a local upstream, beside the
calls per second a bare aiohttp client loop reaches against the same upstream, on the same machine.

    .venv/bin/python bench/forwarding.py [--batches 50] [--jobs 200] [--concurrency 50] [--repeat 3]

Both sides make the same calls: `POST /api/1.0/bench?action=echo`, a small JSON body, IWS-signed,
with an Idempotency-Key, at most `--concurrency` in flight. The upstream is a minimal aiohttp
server in its own process that answers each call with its params (no auth, no storage), so the
bare loop's rate is the ceiling and the ratio is what batchgate's durable path costs:

  bare loop   `--concurrency` tasks sharing one pooled aiohttp session, signing each call
  batchgate   `batchgate serve --config` (SQLite, its own process) with the upstream mapped;
              `--batches` batches of `--jobs` jobs submitted at once from 8 connections; jobs/s is
              all jobs / (first submit -> last callback). Jobs of one batch run in order, so the
              batches side by side are what keeps `--concurrency` calls in flight.

Each side runs after one uncounted warm-up, then the two alternate `--repeat` times (so other load on
the machine hits both alike); the medians and the median of the per-pair ratios are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from batchgate.client import AsyncClient
from batchgate.protocol.signing import sign_headers

BATCHGATE = str(Path(sys.executable).parent / "batchgate")
SUBMIT_CONNECTIONS = 8
URI = "/api/1.0/bench?action=echo"
PARAMS = {"event": 1, "contacts": [1, 2, 3], "note": "x" * 64}
# The stub upstream checks no signature, but both sides still compute one, as a real gateway must.
UPSTREAM_KEY, UPSTREAM_SECRET = "bench-key", "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_uvloop() -> None:
    """uvicorn serves batchgate on uvloop when it is installed; the other processes use it too."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- the upstream (its own process) -----------------------------------------------------------------


def serve_upstream(port: int) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b'{"echo":' + (body or b"{}") + b"}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/1.0/{namespace}", echo)
    use_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def start(
    argv: list[str], log: Path, health: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(health, timeout=1).close()  # noqa: S310 (our own loopback URL)
            return proc
        except urllib.error.HTTPError:
            return proc  # answering at all is enough: the upstream has no health route
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(log.read_text())


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


# -- the bare client loop ---------------------------------------------------------------------------


async def bare_loop(upstream: str, total: int, concurrency: int) -> float:
    """Calls per second of `concurrency` tasks making `total` signed calls through one session."""
    body = orjson.dumps(PARAMS)
    remaining = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller() -> None:
            for n in remaining:
                headers = sign_headers(key=UPSTREAM_KEY, secret=UPSTREAM_SECRET, uri=URI, body=body)
                headers["Idempotency-Key"] = f"bench-{n}"
                async with session.post(upstream + URI, data=body, headers=headers) as answer:
                    orjson.loads(await answer.read())
                    assert answer.status == 200

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


# -- batchgate ------------------------------------------------------------------------------------


class Callbacks:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        results = orjson.loads(await request.read())
        assert all(r["response"] == {"echo": PARAMS} for r in results["results"]), "a job was not forwarded"
        self.arrived.setdefault(results["asyncId"], time.perf_counter())
        self.changed.set()
        return web.Response()

    async def wait_for(self, ids: list[str]) -> float:
        while not all(i in self.arrived for i in ids):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 300)
        return max(self.arrived[i] for i in ids)


async def through_batchgate(
    url: str, key: tuple[str, str], callbacks: Callbacks, hook: str, batches: int, jobs: int
) -> float:
    """Jobs per second: all jobs / (first submit -> last callback)."""
    batch = [{"namespace": "bench", "action": "echo", "params": PARAMS}] * jobs
    pending = iter(range(batches))
    ids: list[str] = []

    async def submitter(api: AsyncClient) -> None:
        for _ in pending:
            ids.append(await api.run(batch, callback_url=hook))

    # A client per run: a connection idle past uvicorn's keep-alive would fail the next POST.
    async with AsyncClient(url, *key, timeout_s=120) as api:
        started = time.perf_counter()
        await asyncio.gather(*(submitter(api) for _ in range(SUBMIT_CONNECTIONS)))
    return batches * jobs / (await callbacks.wait_for(ids) - started)


def start_batchgate(folder: Path, upstream: str, concurrency: int) -> tuple[subprocess.Popen[bytes], str]:
    config = folder / "batchgate.toml"
    config.write_text(
        f'[upstreams.bench]\nbase_url = "{upstream}"\nnamespaces = ["bench"]\n'
        f'key = "{UPSTREAM_KEY}"\nsecret = "{UPSTREAM_SECRET}"\n'
        f"max_concurrency = {concurrency}\ntimeout_s = 30\n"
    )
    port = free_port()
    argv = [BATCHGATE, "serve", "--db", f"sqlite:///{folder / 'bg.db'}", "--port", str(port)]
    argv += ["--config", str(config), "--max-batches", str(concurrency)]
    env = {"BATCHGATE_CALLBACK_ALLOW": "127.0.0.1", "BATCHGATE_LOG_LEVEL": "warning"}
    url = f"http://127.0.0.1:{port}"
    return start(argv, folder / "serve.log", url + "/healthz", env), url


def create_key(folder: Path) -> tuple[str, str]:
    db = f"sqlite:///{folder / 'bg.db'}"
    out = subprocess.run(
        [BATCHGATE, "keys", "create", "--db", db, "--name", "bench", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    created = json.loads(out.stdout)
    return created["key"], created["secret"]


async def receiver(callbacks: Callbacks) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/cb", callbacks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/cb"


async def measure(args: argparse.Namespace, folder: Path, upstream: str) -> tuple[list[float], list[float]]:
    """Bare and forwarded runs alternate, so load from anything else on the machine hits both alike."""
    total = args.batches * args.jobs
    proc, url = start_batchgate(folder, upstream, args.concurrency)
    key, secret = create_key(folder)
    callbacks = Callbacks()
    runner, hook = await receiver(callbacks)
    bare: list[float] = []
    gated: list[float] = []
    try:
        await bare_loop(upstream, min(total, 2000), args.concurrency)  # warm-ups
        await through_batchgate(url, (key, secret), callbacks, hook, 1, args.jobs)
        for _ in range(args.repeat):
            bare.append(await bare_loop(upstream, total, args.concurrency))
            gated.append(
                await through_batchgate(url, (key, secret), callbacks, hook, args.batches, args.jobs)
            )
    finally:
        await runner.cleanup()
        stop(proc)
    return bare, gated


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    use_uvloop()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        upstream_proc = start(
            [sys.executable, __file__, "--serve-upstream", str(port)],
            folder / "upstream.log",
            f"http://127.0.0.1:{port}/",
        )
        try:
            bare, gated = asyncio.run(measure(args, folder, f"http://127.0.0.1:{port}"))
        finally:
            stop(upstream_proc)
    report(args, bare, gated)


def report(args: argparse.Namespace, bare: list[float], gated: list[float]) -> None:
    def show(runs: list[float]) -> str:
        return f"{statistics.median(runs):8.0f}/s  (runs: {', '.join(f'{r:.0f}' for r in runs)})"

    ratios = [g / b for g, b in zip(gated, bare, strict=True)]
    calls = args.batches * args.jobs
    print(f"{calls} calls per run, at most {args.concurrency} in flight, {os.cpu_count()} CPUs")
    print(f"bare aiohttp loop       {show(bare)}")
    print(f"forwarded by batchgate  {show(gated)}")
    pairs = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"ratio (per pair)        {statistics.median(ratios):8.2f}    (pairs: {pairs})")


if __name__ == "__main__":
    main()
