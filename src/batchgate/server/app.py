"""The ASGI application: `GET /healthz` and `POST /api/1.0/{namespace}?action=...` around a Service.

Three routes and one envelope need no framework; on the hot path of every call, each layer one
would add costs time (measured with wrk: see docs/architecture.md).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from batchgate.actions import ActionContext, App, Reply
from batchgate.protocol.errors import (
    BadRequest,
    BatchgateError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    WireError,
)
from batchgate.protocol.paths import API_VERSION
from batchgate.server.envelope import (
    Receive,
    Request,
    Scope,
    Send,
    authenticate,
    parse_params,
    read_body,
    respond,
)
from batchgate.server.keys import KeyCache
from batchgate.service import Service
from batchgate.settings import Settings

log = logging.getLogger(__name__)


class Api:
    """Routes each HTTP request to the batch namespace or to an action, and runs the Service's
    start and stop on the ASGI lifespan."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.keys = KeyCache(service.store, ttl_s=service.settings.key_cache_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            status, body = await self.answer(scope, receive)
            await respond(send, status, body)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """The status and JSON body of one HTTP request: never raises, never a traceback."""
        request = Request.of(scope)
        try:
            answer = await self._route(request, receive)
        except WireError as exc:
            return exc.error_code, exc.to_json()
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return InternalError.error_code, InternalError().to_json()
        if isinstance(answer, Reply):
            return answer.status, answer.body
        return 200, orjson.dumps(answer)

    async def _route(self, request: Request, receive: Receive) -> Any:
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed()
            return {"status": "ok"}
        _, api, version, namespace, *rest = [*request.path.split("/"), "", "", ""][:5]
        if api != "api" or not namespace or rest != [""]:
            raise NotFound(f"No such path {request.path}")
        if request.method != "POST":
            raise MethodNotAllowed()
        action = request.query.get("action", "")
        if version != API_VERSION or not action:
            raise NotFound(f"Unknown call {request.path}?action={action}")
        return await self._call(request, receive, namespace, action)

    async def _call(self, request: Request, receive: Receive, namespace: str, action: str) -> Any:
        body = await read_body(request, receive, self.service.settings.max_body_bytes)
        api_key = await authenticate(request, body, self.keys)
        params = parse_params(body)
        if namespace == "batch":
            return await self.service.batches.handle(api_key, action, params)
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        ctx = ActionContext(account=api_key.account, client_key=request.headers.get("idempotency-key"))
        return await self.service.app.reply(namespace, action, params, ctx)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.service.start()
                except BatchgateError as exc:  # the database cannot be used, say: no traceback
                    log.error("could not start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, app: App | None = None, *, run_worker: bool = True) -> Api:
    """The ASGI application serving `app`'s actions beside the built-in ones."""
    return Api(Service.build(settings, app, run_worker=run_worker))
