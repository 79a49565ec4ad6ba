"""The one load generator for every system: signed `batch.run` calls over aiohttp.

Every request is signed the IWS way (batchgate.protocol.signing) for every system, and every
system's endpoint verifies the signature, so both sides pay for authentication alike.

Shapes (BENCH.md): burst (all batches from 8 connections), paced (open loop at a rate, latency
from the scheduled send time), solo (one batch at a time, the next 200 ms after the previous
callback), and `run_calls` (1-job batches from 8 connections: `run` calls per second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson
from bench.suite.receiver import Receiver

from batchgate.protocol.signing import sign_headers

RUN_URI = "/api/1.0/batch?action=run"
BURST_CONNECTIONS = 8
SOLO_PAUSE_S = 0.2


@dataclass
class Submit:
    batch: int
    start: float  # perf_counter when the request was sent
    end: float  # ... when its answer was read
    wall: float  # time.time() when sent, for the jobs' own timestamps
    scheduled: float | None = None  # perf_counter it was meant to be sent (paced)
    async_id: str | None = None
    error: str | None = None

    @property
    def origin(self) -> float:
        """Where submit->callback latency starts: the scheduled time when paced."""
        return self.scheduled if self.scheduled is not None else self.start


class LoadGen:
    def __init__(self, base_url: str, key: str, secret: str, *, connections: int = BURST_CONNECTIONS) -> None:
        self.url = base_url.rstrip("/") + RUN_URI
        self.key = key
        self.secret = secret
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=300),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def submit(self, batch: int, body: bytes, scheduled: float | None = None) -> Submit:
        headers = sign_headers(key=self.key, secret=self.secret, uri=RUN_URI, body=body)
        wall, start = time.time(), time.perf_counter()
        try:
            async with self.session.post(self.url, data=body, headers=headers) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Submit(
                batch, start, time.perf_counter(), wall, scheduled, error=f"{type(exc).__name__}: {exc}"
            )
        end = time.perf_counter()
        if status != 200:
            return Submit(batch, start, end, wall, scheduled, error=f"HTTP {status}: {raw[:300]!r}")
        try:
            async_id = str(orjson.loads(raw)["asyncId"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Submit(batch, start, end, wall, scheduled, error=f"no asyncId in {raw[:300]!r}")
        return Submit(batch, start, end, wall, scheduled, async_id=async_id)


async def burst(gen: LoadGen, batches: list[int], body: Callable[[int], bytes]) -> list[Submit]:
    pending = iter(batches)
    done: list[Submit] = []

    async def connection() -> None:
        for batch in pending:
            done.append(await gen.submit(batch, body(batch)))

    await asyncio.gather(*(connection() for _ in range(BURST_CONNECTIONS)))
    return done


async def paced(gen: LoadGen, batches: list[int], body: Callable[[int], bytes], rate: float) -> list[Submit]:
    """Open loop: batch i is sent at t0 + i / rate whatever happened to the earlier ones."""
    t0 = time.perf_counter() + 0.05

    async def one(i: int, batch: int) -> Submit:
        scheduled = t0 + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        return await gen.submit(batch, body(batch), scheduled)

    return list(await asyncio.gather(*(one(i, b) for i, b in enumerate(batches))))


async def solo(
    gen: LoadGen, batches: list[int], body: Callable[[int], bytes], receiver: Receiver, timeout_s: float
) -> list[Submit]:
    done: list[Submit] = []
    for batch in batches:
        submit = await gen.submit(batch, body(batch))
        done.append(submit)
        if submit.async_id is None or not await receiver.wait_for({submit.async_id}, timeout_s):
            break  # the gate voids the run: a batch failed or never called back
        await asyncio.sleep(SOLO_PAUSE_S)
    return done


async def run_calls(gen: LoadGen, count: int, body: Callable[[int], bytes]) -> list[Submit]:
    return await burst(gen, list(range(count)), body)
