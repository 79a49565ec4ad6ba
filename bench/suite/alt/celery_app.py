"""Celery + Redis (broker and result backend): each batch is
`chord(group(job.s(j) for j in jobs), post_callback.s(async_id, url))`.

    uvicorn bench.suite.alt.celery_app:asgi                      # the API process
    celery -A bench.suite.alt.celery_app worker [tuned options]  # the worker (see systems/alternatives.py)

Messages and results are serialised with orjson (registered as a kombu serializer) so that every
system uses the same fast JSON library (BENCH.md, fairness). Tasks are plain blocking functions,
as Celery runs them: io10 is `time.sleep(0.010)`, http a urllib3 pooled POST.
"""

from __future__ import annotations

import os
from typing import Any

import anyio.to_thread
import orjson
import urllib3
from bench.suite import jobs
from bench.suite.alt import common
from celery import Celery, chord, group
from kombu.serialization import register

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")

register(
    "orjson",
    orjson.dumps,
    orjson.loads,
    content_type="application/x-orjson",
    content_encoding="binary",
)

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="orjson",
    result_serializer="orjson",
    accept_content=["orjson", "json"],
    result_accept_content=["orjson", "json"],
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)

_pool: tuple[int, urllib3.PoolManager] | None = None


def _http() -> urllib3.PoolManager:
    """One connection pool per process (made after the prefork pool forks), shared by its threads."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), urllib3.PoolManager(maxsize=50, block=False, retries=False))
    return _pool[1]


def _post(url: str, body: bytes) -> bytes:
    answer = _http().request(
        "POST", url, body=body, headers={"Content-Type": "application/json"}, timeout=30.0
    )
    return bytes(answer.data)


@app.task(name="bench.job")
def job(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec.get("params", {})
    match spec["namespace"], spec["action"]:
        case "bench", "noop":
            response = jobs.noop(params)
        case "bench", "io10":
            response = jobs.io10_blocking(params)
        case "stub", "echo":
            response = orjson.loads(_post(common.STUB_URL + jobs.STUB_PATH, orjson.dumps(params)))
        case namespace, action:
            response = jobs.unknown(namespace, action)
    return common.result(spec, response)


@app.task(name="bench.callback")
def post_callback(results: list[dict[str, Any]], async_id: str, url: str) -> None:
    _post(url, orjson.dumps({"asyncId": async_id, "results": results}))


async def dispatch(async_id: str, batch_jobs: list[dict[str, Any]], callback_url: str) -> None:
    signature = chord(group(job.s(spec) for spec in batch_jobs), post_callback.s(async_id, callback_url))
    # apply_async blocks on Redis: run it in the thread pool, not on the event loop
    await anyio.to_thread.run_sync(signature.apply_async)


asgi = common.endpoint(dispatch)
