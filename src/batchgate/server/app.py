"""The composition root: one process's store, actions, batch namespace, worker and delivery loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from batchgate.actions import ActionContext, Gateway, Reply
from batchgate.actions.testing import builtin_actions
from batchgate.batches import Batches
from batchgate.delivery import Deliverer
from batchgate.netguard import AddressPolicy, guarded_connector
from batchgate.protocol.errors import BadRequest, InternalError, MethodNotAllowed, NotFound, WireError
from batchgate.protocol.signing import API_VERSION
from batchgate.retry import RetryPolicy
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
from batchgate.settings import Settings
from batchgate.store import Store, StoreError, open_store
from batchgate.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything one `batchgate serve` or `batchgate worker` process runs."""

    settings: Settings
    gateway: Gateway
    store: Store
    batches: Batches
    keys: KeyCache
    worker: Worker | None = None
    deliverer: Deliverer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, gateway: Gateway | None = None, *, run_worker: bool = True) -> Service:
        actions = builtin_actions(sleep_cap_s=settings.sleep_cap_s)
        if gateway is not None:
            actions.include(gateway)
        store = open_store(settings.db, result_ttl_s=settings.result_ttl_s)
        policy = AddressPolicy.from_spec(settings.callback_allow)
        service = cls(
            settings, actions, store, Batches(store, policy), KeyCache(store, ttl_s=settings.key_cache_s)
        )
        if run_worker:
            service.worker = Worker(
                store,
                actions,
                max_batches=settings.max_batches,
                lease_s=settings.lease_s,
                poll_s=settings.poll_s,
            )
            service.batches.on_submit = service.worker.wake
        return service

    async def start(self) -> None:
        await self.store.open()
        await self.gateway.startup()
        if self.worker is None:
            return
        policy = self.batches.policy
        session = aiohttp.ClientSession(
            connector=guarded_connector(policy, limit=self.settings.callback_concurrency), trust_env=False
        )
        self.deliverer = Deliverer(
            self.store,
            session,
            policy=policy,
            retry=RetryPolicy(self.settings.callback_retry_schedule, self.settings.retry_after_cap_s),
            timeout_s=self.settings.callback_timeout_s,
            concurrency=self.settings.callback_concurrency,
            poll_s=self.settings.poll_s,
        )
        self.store.on_delivery_queued = self.deliverer.wake
        await self.store.listen(on_batches=self.worker.wake, on_deliveries=self.deliverer.wake)
        self._tasks = [
            asyncio.create_task(loop)
            for loop in (self.worker.run(), self.deliverer.run(), self._purge_periodically())
        ]

    async def stop(self) -> None:
        if self.worker and self.deliverer:
            await asyncio.gather(self.worker.stop(), self.deliverer.stop(grace_s=5.0))
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.deliverer.session.close()
        await self.gateway.shutdown()
        await self.store.close()

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_every_s)
            try:
                purged = await self.store.purge()
            except StoreError:
                log.exception("could not purge expired batches; trying again later")
                continue
            if purged:
                log.info("purged %d expired batches", purged)

    # the HTTP side ---------------------------------------------------------
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
        body = await read_body(request, receive, self.settings.max_body_bytes)
        api_key = await authenticate(request, body, self.keys)
        params = parse_params(body)
        if namespace == "batch":
            return await self.batches.handle(api_key, action, params)
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        ctx = ActionContext(account=api_key.account, client_key=request.headers.get("idempotency-key"))
        return await self.gateway.call(namespace, action, params, ctx)


class Api:
    """The ASGI application: `GET /healthz` and `POST /api/1.0/{namespace}?action=...`.

    Three routes and one envelope need no framework; on the hot path of every call, each layer
    one would add costs time (measured with wrk: see docs/architecture.md).
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            status, body = await self.service.answer(scope, receive)
            await respond(send, status, body)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.service.start()
                except Exception as exc:
                    log.exception("could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, gateway: Gateway | None = None, *, run_worker: bool = True) -> Api:
    return Api(Service.build(settings, gateway, run_worker=run_worker))
