"""arq + Redis, with the counter pattern (arq has no chord): each job stores its result and INCRs
the batch's counter in one transaction; the job that brings it to the batch's size enqueues
`send_callback`, which reads the results in order and POSTs them.

    uvicorn bench.suite.alt.arq_app:asgi                  # the API process
    python -m bench.suite.alt.arq_app [--tuned]           # the worker: arq's run_worker under uvloop

Defaults are arq's (max_jobs=10, poll_delay=0.5 s, the CLI's INFO logging); `--tuned` sets
max_jobs=50, poll_delay=0.05 s and logs warnings only.
"""

from __future__ import annotations

import logging.config
import os
import sys
from typing import Any

import aiohttp
import orjson
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.logs import default_log_config
from bench.suite.alt import common

REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))


def _keys(async_id: str) -> tuple[str, str, str]:
    return f"bench:url:{async_id}", f"bench:results:{async_id}", f"bench:count:{async_id}"


async def run_job(ctx: dict[str, Any], async_id: str, index: int, total: int, job: dict[str, Any]) -> None:
    outcome = orjson.dumps(await common.execute(job, ctx["session"]))
    redis: ArqRedis = ctx["redis"]
    _, results_key, count_key = _keys(async_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(results_key, str(index), outcome)
        pipe.incr(count_key)
        _, count = await pipe.execute()
    if count == total:
        await redis.enqueue_job("send_callback", async_id, total)


async def send_callback(ctx: dict[str, Any], async_id: str, total: int) -> None:
    redis: ArqRedis = ctx["redis"]
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


def worker_settings(*, tuned: bool) -> dict[str, Any]:
    """arq's worker settings: its defaults, or the tuned knobs (arq reads a settings class's own
    attributes only, so this is a dict rather than a subclass)."""
    settings: dict[str, Any] = {
        "functions": [run_job, send_callback],
        "redis_settings": REDIS,
        "on_startup": startup,
        "on_shutdown": shutdown,
    }
    if tuned:
        settings.update(max_jobs=50, poll_delay=0.05)
    return settings


# the API side -------------------------------------------------------------------------------------

_pool: ArqRedis | None = None


async def _open() -> None:
    global _pool
    _pool = await create_pool(REDIS)


async def _close() -> None:
    if _pool is not None:
        await _pool.aclose()


async def dispatch(async_id: str, batch_jobs: list[dict[str, Any]], callback_url: str) -> None:
    assert _pool is not None
    url_key, _, _ = _keys(async_id)
    await _pool.set(url_key, callback_url)
    for index, job in enumerate(batch_jobs):
        await _pool.enqueue_job("run_job", async_id, index, len(batch_jobs), job)


asgi = common.endpoint(dispatch, on_startup=[_open], on_shutdown=[_close])


def main(argv: list[str]) -> None:
    import uvloop
    from arq.worker import run_worker

    tuned = "--tuned" in argv
    config = default_log_config(verbose=False)
    if tuned:
        config["handlers"]["arq.standard"]["level"] = config["loggers"]["arq"]["level"] = "WARNING"
    logging.config.dictConfig(config)
    uvloop.install()
    run_worker(worker_settings(tuned=tuned))  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1:])
