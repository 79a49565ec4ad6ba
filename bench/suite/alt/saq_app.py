"""SAQ + Redis, with the counter pattern: each job stores its result and INCRs the batch's counter
in one transaction; the job that brings it to the batch's size enqueues `send_callback` (under a
key made from the batch's id, which SAQ enqueues once), which reads the results in order and POSTs
them.

    uvicorn bench.suite.alt.saq_app:asgi                  # the API process
    python -m bench.suite.alt.saq_app [--tuned]           # the worker: SAQ's runner under uvloop

SAQ has no chord and no job dependencies. Its `Queue.map` enqueues jobs and then polls their
status (every 0.5 s by default) until all are done: called inside a parent job it holds one of the
worker's slots per batch, so as soon as `concurrency` batches are waiting their children can no
longer run (a burst of 50 batches deadlocks at the default concurrency of 10); called in the API
process it would make the API poll Redis and post the callback, outside any worker. The counter
keeps the fan-in inside the workers, as the arq system does. The API enqueues a batch's jobs
concurrently, as `Queue.map` does.

Defaults are SAQ's (one worker process, concurrency 10, blocking dequeue, the CLI's WARNING
logging); `--tuned` runs two worker processes (SAQ's `--workers 2`) of concurrency 25 each, so
that at most 50 jobs are in flight. Both serialise jobs with orjson (SAQ's documented `dump` and
`load`), as the Celery system does (BENCH.md: the same fast JSON library everywhere).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import aiohttp
import orjson
from bench.suite.alt import common
from saq import Queue

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
DEFAULTS = {"workers": 1, "concurrency": 10}  # SAQ's own
TUNED = {"workers": 2, "concurrency": 25}  # 2 x 25: at most 50 jobs in flight (BENCH.md, fairness)


def make_queue() -> Any:
    return Queue.from_url(REDIS_URL, dump=orjson.dumps, load=orjson.loads)


def _keys(async_id: str) -> tuple[str, str, str]:
    return f"bench:url:{async_id}", f"bench:results:{async_id}", f"bench:count:{async_id}"


async def run_job(
    ctx: dict[str, Any], *, async_id: str, index: int, total: int, spec: dict[str, Any]
) -> None:
    outcome = orjson.dumps(await common.execute(spec, ctx["session"]))
    queue = ctx["worker"].queue
    _, results_key, count_key = _keys(async_id)
    async with queue.redis.pipeline(transaction=True) as pipe:
        pipe.hset(results_key, str(index), outcome)
        pipe.incr(count_key)
        _, count = await pipe.execute()
    if count == total:
        await queue.enqueue("send_callback", key=f"callback:{async_id}", async_id=async_id, total=total)


async def send_callback(ctx: dict[str, Any], *, async_id: str, total: int) -> None:
    redis = ctx["worker"].queue.redis
    url_key, results_key, _ = _keys(async_id)
    url = await redis.get(url_key)
    stored = await redis.hgetall(results_key)
    results = b",".join(stored[str(i).encode()] for i in range(total))
    body = b'{"asyncId":' + orjson.dumps(async_id) + b',"results":[' + results + b"]}"
    async with ctx["session"].post(
        url.decode(), data=body, headers={"Content-Type": "application/json"}
    ) as answer:
        await answer.read()


async def startup(ctx: dict[str, Any]) -> None:
    ctx["session"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50), timeout=aiohttp.ClientTimeout(total=30), trust_env=False
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].close()


def _settings(concurrency: int) -> dict[str, Any]:
    return {
        "queue": make_queue(),
        "functions": [run_job, send_callback],
        "concurrency": concurrency,
        "startup": startup,
        "shutdown": shutdown,
    }


def defaults() -> dict[str, Any]:
    """SAQ's worker settings (SAQ calls a callable settings object in each worker process)."""
    return _settings(DEFAULTS["concurrency"])


def tuned() -> dict[str, Any]:
    return _settings(TUNED["concurrency"])


# the API side -------------------------------------------------------------------------------------

_queue: Any = None


async def _open() -> None:
    global _queue
    _queue = make_queue()
    await _queue.connect()


async def _close() -> None:
    if _queue is not None:
        await _queue.disconnect()


async def dispatch(async_id: str, batch_jobs: list[dict[str, Any]], callback_url: str) -> None:
    assert _queue is not None
    url_key, _, _ = _keys(async_id)
    await _queue.redis.set(url_key, callback_url)
    total = len(batch_jobs)
    await asyncio.gather(
        *(
            _queue.enqueue("run_job", async_id=async_id, index=index, total=total, spec=spec)
            for index, spec in enumerate(batch_jobs)
        )
    )


asgi = common.endpoint(dispatch, on_startup=[_open], on_shutdown=[_close])


def main(argv: list[str]) -> None:
    import uvloop
    from saq.runner import run

    settings = TUNED if "--tuned" in argv else DEFAULTS
    name = "tuned" if "--tuned" in argv else "defaults"
    # SAQ's runner makes its event loops with asyncio.new_event_loop(), in this process and in the
    # ones it forks for --workers: the policy makes them uvloop's
    uvloop.install()
    run(f"bench.suite.alt.saq_app.{name}", workers=settings["workers"])


if __name__ == "__main__":
    main(sys.argv[1:])
