"""The ASGI application: `GET /healthz` and `POST /api/1.0/{namespace}?action=...` around a Service.

Three routes and one envelope need no framework; on the hot path of every call, each layer one
would add costs time (measured with wrk: see docs/architecture.md).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import orjson
from prometheus_client import Counter, Histogram

from batchgate import metrics, tracing
from batchgate.actions import ActionContext, App, Reply
from batchgate.batches import Caller, replayed
from batchgate.protocol.errors import (
    BadRequest,
    BatchgateError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    WireError,
)
from batchgate.protocol.paths import API_VERSION
from batchgate.protocol.signing import verify_body
from batchgate.server.envelope import (
    Authenticated,
    BodyBudget,
    Receive,
    Request,
    Scope,
    Send,
    SlowBody,
    authenticate,
    parse_params,
    read_body,
    respond,
)
from batchgate.server.keys import KeyCache
from batchgate.server.limits import RateLimiter
from batchgate.service import Service
from batchgate.settings import Settings
from batchgate.store import StoreError
from batchgate.store.base import RequestId

log = logging.getLogger(__name__)


class Api:
    """Routes each HTTP request to the batch namespace or to an action, and runs the Service's
    start and stop on the ASGI lifespan."""

    def __init__(self, service: Service) -> None:
        self.service = service
        settings = service.settings
        self.keys = KeyCache(service.store, ttl_s=settings.key_cache_s)
        self.rate = RateLimiter(settings.rate_limit)
        self.bodies = BodyBudget(settings.max_body_memory)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.answer(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers one HTTP request with a JSON body: never raises, never a traceback."""
        started = time.perf_counter()
        request = Request.of(scope)
        status = await self._answer(request, receive, send)
        label = self._metric_label(request)
        _http_requests(label, status).inc()
        _http_seconds(label).observe(time.perf_counter() - started)

    async def _answer(self, request: Request, receive: Receive, send: Send) -> int:
        try:
            answer = await self._route(request, receive)
        except WireError as exc:
            retry_after = exc.retry_after_s if isinstance(exc, TooManyRequests) else None
            close = isinstance(exc, SlowBody)
            await respond(send, exc.error_code, exc.to_json(), retry_after_s=retry_after, close=close)
            return exc.error_code
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            await respond(send, InternalError.error_code, InternalError().to_json())
            return InternalError.error_code
        if isinstance(answer, Reply):
            await respond(send, answer.status, answer.body)
            return answer.status
        await respond(send, 200, orjson.dumps(answer))
        return 200

    def _metric_label(self, request: Request) -> str:
        """The action a request is counted under; a bounded set, whatever the client sent."""
        if request.path in ("/healthz", "/readyz"):
            return request.path[1:]
        parts = request.path.split("/")
        if len(parts) != 4 or parts[1] != "api":
            return metrics.OTHER
        namespace, action = parts[3], request.query.get("action", "")
        if namespace == "batch":
            return f"batch.{action}" if action in BATCH_ACTIONS else metrics.OTHER
        return self.service.app.metric_label(namespace, action)

    async def _route(self, request: Request, receive: Receive) -> Any:
        if request.path in ("/healthz", "/readyz"):
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed()
            return await self._ready() if request.path == "/readyz" else {"status": "ok"}
        _, api, version, namespace, *rest = [*request.path.split("/"), "", "", ""][:5]
        if api != "api" or not namespace or rest != [""]:
            raise NotFound(f"No such path {request.path}")
        if request.method != "POST":
            raise MethodNotAllowed()
        action = request.query.get("action", "")
        if version != API_VERSION or not action:
            raise NotFound(f"Unknown call {request.path}?action={action}")
        return await self._call(request, receive, namespace, action)

    async def _ready(self) -> Reply:
        """Readiness: whether the store can be read and written; 503 with the reason when it cannot."""
        try:
            await self.service.store.probe()
        except StoreError as exc:
            return Reply(503, orjson.dumps({"status": "unavailable", "reason": str(exc)}))
        return Reply(200, b'{"status":"ready"}')

    async def _call(self, request: Request, receive: Receive, namespace: str, action: str) -> Any:
        auth = await authenticate(request, self.keys)  # before any of the body is read
        self.rate.check(auth.api_key.account)
        self.keys.used(auth.api_key.key)
        settings = self.service.settings
        async with read_body(
            request,
            receive,
            limit=settings.max_body_bytes,
            min_rate=settings.body_min_rate,
            budget=self.bodies,
        ) as body:
            verify_body(request.signed, body)
            params = parse_params(body)
            request_id = RequestId(auth.api_key.key, auth.signature, auth.replayable_until)
            if namespace == "batch":
                caller = Caller(auth.api_key, request_id, request.headers.get("idempotency-key"))
                handle = self.service.batches.handle
                return await tracing.batch_call(handle, caller, action, params, request.headers)
            return await self._direct(auth, request, request_id, namespace, action, params)

    async def _direct(
        self,
        auth: Authenticated,
        request: Request,
        request_id: RequestId,
        namespace: str,
        action: str,
        params: Any,
    ) -> Reply:
        """A direct call of an action. One that may change something runs once per signed request."""
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        app = self.service.app
        if not app.read_only(namespace, action) and not await self.service.store.first_use(request_id):
            raise replayed()
        ctx = ActionContext(account=auth.api_key.account, client_key=request.headers.get("idempotency-key"))
        return await app.reply(namespace, action, params, ctx)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await run_lifespan(self.service, receive, send)


async def run_lifespan(service: Service, receive: Receive, send: Send) -> None:
    """The ASGI lifespan: starts the service, and stops it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await service.start()
            except BatchgateError as exc:  # the database cannot be used, or its secrets read: no traceback
                log.error("could not start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            except Exception as exc:
                log.exception("could not start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await service.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(settings: Settings, app: App | None = None, *, run_worker: bool = True) -> Api:
    """The ASGI application serving `app`'s actions beside the built-in ones."""
    return Api(Service.build(settings, app, run_worker=run_worker))


class Listeners:
    """One ASGI application on two listening sockets: the admin port gets the admin listener's
    application, every other the public API (absent in a worker process); the service's lifespan
    runs once."""

    def __init__(self, service: Service, *, api: Any | None, admin: Any, admin_port: int) -> None:
        self.service, self.api, self.admin, self.admin_port = service, api, admin, admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(self.service, receive, send)
            return
        server = scope.get("server") or (None, None)
        if self.api is None or server[1] == self.admin_port:
            await self.admin(scope, receive, send)
        else:
            await self.api(scope, receive, send)


BATCH_ACTIONS = frozenset({"run", "progress", "results", "status", "list", "repost", "restart", "cancel"})


@functools.cache
def _http_requests(action: str, status: int) -> Counter:
    return metrics.HTTP_REQUESTS.labels(action, str(status))


@functools.cache
def _http_seconds(action: str) -> Histogram:
    return metrics.HTTP_SECONDS.labels(action)
