"""The composition root: one process's store, actions, batch namespace, worker and delivery loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchgate.actions import ActionContext, Gateway, Reply
from batchgate.actions.testing import builtin_actions
from batchgate.batches import Batches
from batchgate.delivery import Deliverer
from batchgate.netguard import AddressPolicy, guarded_connector
from batchgate.protocol.errors import BadRequest, InternalError, MethodNotAllowed, NotFound, WireError
from batchgate.protocol.signing import API_VERSION
from batchgate.retry import RetryPolicy
from batchgate.server.envelope import authenticate, parse_params, read_body
from batchgate.server.keys import KeyCache
from batchgate.settings import Settings
from batchgate.store import Store, StoreError, open_store
from batchgate.worker import Worker

log = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(exc: WireError) -> Response:
    return Response(exc.to_json(), status_code=exc.error_code, media_type="application/json")


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
    async def call(self, request: Request) -> Response:
        try:
            answer = await self._call(request)
            if isinstance(answer, Reply):
                return Response(answer.body, status_code=answer.status, media_type="application/json")
            return json_response(answer)
        except WireError as exc:
            return error_response(exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(InternalError())

    async def _call(self, request: Request) -> Any:
        if request.method != "POST":
            raise MethodNotAllowed()
        namespace = request.path_params["namespace"]
        action = request.query_params.get("action", "")
        if request.path_params["version"] != API_VERSION or not action:
            raise NotFound(f"Unknown call {request.url.path}?action={action}")
        body = await read_body(request, self.settings.max_body_bytes)
        api_key = await authenticate(request, body, self.keys)
        params = parse_params(body)
        if namespace == "batch":
            return await self.batches.handle(api_key, action, params)
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        return await self.gateway.call(namespace, action, params, ActionContext(account=api_key.account))


def create_app(settings: Settings, gateway: Gateway | None = None, *, run_worker: bool = True) -> Starlette:
    service = Service.build(settings, gateway, run_worker=run_worker)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_response(
            MethodNotAllowed() if status == 405 else NotFound(f"No such path {request.url.path}")
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route(
                "/api/{version}/{namespace}",
                service.call,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            ),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
