"""The pieces the Celery and arq systems share: their ASGI endpoint and the async job runner.

The endpoint accepts the same signed `batch.run` call as batchgate (POST /api/1.0/batch?action=run)
and verifies its IWS signature against one key held in memory (BENCH_KEY, BENCH_SECRET): the
load generator signs for every system, and every system checks. It then validates the jobs as
far as the benchmark needs, picks an asyncId and hands the batch to `dispatch`. Results and the
callback body have batchgate's shape: {"asyncId", "results": [{namespace, action, request, response}]}.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from bench.suite import jobs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchgate.protocol.errors import BadRequest, Unauthorized, WireError
from batchgate.protocol.signing import AUTH_HEADER, SignedRequest, parse_authorization, verify

MAX_JOBS = 200
STUB_URL = os.environ.get("BENCH_STUB_URL", "http://127.0.0.1:9")
Dispatch = Callable[[str, list[dict[str, Any]], str], Awaitable[None]]


def result(job: dict[str, Any], response: Any) -> dict[str, Any]:
    return {
        "namespace": job["namespace"],
        "action": job["action"],
        "request": job.get("params", {}),
        "response": response,
    }


async def execute(job: dict[str, Any], session: aiohttp.ClientSession) -> dict[str, Any]:
    """One job, for an asyncio worker (arq); its result in the callback's shape."""
    params = job.get("params", {})
    match job["namespace"], job["action"]:
        case "bench", "noop":
            response = jobs.noop(params)
        case "bench", "io10":
            response = await jobs.io10(params)
        case "stub", "echo":
            async with session.post(
                STUB_URL + jobs.STUB_PATH,
                data=orjson.dumps(params),
                headers={"Content-Type": "application/json"},
            ) as answer:
                response = orjson.loads(await answer.read())
        case namespace, action:
            response = jobs.unknown(namespace, action)
    return result(job, response)


def _jobs_of(params: Any) -> tuple[list[dict[str, Any]], str]:
    if not isinstance(params, dict) or not isinstance(params.get("jobs"), list):
        raise BadRequest("Incorrect Job Format", specific_code=24092)
    found = params["jobs"]
    if not found:
        raise BadRequest("Empty job parameter found", specific_code=24093)
    if len(found) > MAX_JOBS:
        raise BadRequest(
            "The maximum number of jobs can be put on a single request is 200", specific_code=24448
        )
    for job in found:
        if (
            not isinstance(job, dict)
            or not isinstance(job.get("namespace"), str)
            or not isinstance(job.get("action"), str)
        ):
            raise BadRequest("Incorrect Job Format", specific_code=24092)
    callback = params.get("callbackUrl")
    if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
        raise BadRequest("'callbackUrl' does not validate", specific_code=23016)
    return found, callback


def endpoint(
    dispatch: Dispatch,
    *,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Starlette:
    key = os.environ.get("BENCH_KEY", "bench")
    secret = os.environ.get("BENCH_SECRET", "bench")

    async def run(request: Request) -> Response:
        try:
            if request.query_params.get("action") != "run":
                raise BadRequest("only batch.run is served here")
            body = await request.body()
            offered_key, offered = parse_authorization(request.headers.get(AUTH_HEADER))
            if offered_key != key:
                raise Unauthorized("Unknown key")
            query = request.scope.get("query_string", b"").decode()
            uri = request.scope["raw_path"].decode() + ("?" + query if query else "")
            verify(SignedRequest("POST", uri, request.headers, body), secret=secret, offered=offered)
            batch_jobs, callback = _jobs_of(orjson.loads(body))
            async_id = secrets.token_hex(16)
            await dispatch(async_id, batch_jobs, callback)
        except WireError as exc:
            return Response(exc.to_json(), status_code=exc.error_code, media_type="application/json")
        except orjson.JSONDecodeError:
            return Response(BadRequest("not JSON").to_json(), status_code=400, media_type="application/json")
        return Response(orjson.dumps({"asyncId": async_id}), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        for hook in on_startup:
            await hook()
        yield
        for hook in on_shutdown:
            await hook()

    return Starlette(
        routes=[Route("/api/1.0/batch", run, methods=["POST"]), Route("/healthz", healthz)], lifespan=lifespan
    )
