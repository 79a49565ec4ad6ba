"""The registry of actions: `(namespace, action) -> handler`, shared by direct calls and batch jobs.

A handler takes the call's params as keyword arguments (and `ctx` when it declares one), validated
first against the schema its signature declares (`schema.py`), returns any JSON-serialisable
value, and may raise a `WireError` to answer with its own codes. Sync handlers run in a thread
pool so they never block the event loop. A direct call and a batch job of the same action get
the same answer, byte for byte: both go through `App.reply`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from batchgate.actions.schema import CONTEXT_PARAMETER, ParamsSchema
from batchgate.protocol.errors import Forbidden, InternalError, NotFound, WireError

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)
RESERVED_NAMESPACE = "batch"


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Who is calling, and for a batch job, which one (`async_id` is None for a direct call)."""

    account: str
    async_id: str | None = None
    job_index: int | None = None
    run: int | None = None
    client_key: str | None = None  # a direct call's own `Idempotency-Key` header

    @property
    def idempotency_key(self) -> str | None:
        """The same on every retry of one job's run, different for a restarted run. A direct call
        has one only when its client sent one, scoped by account: an upstream sees every account
        through batchgate's one key, so two accounts' keys must not meet there."""
        if self.async_id is not None:
            return f"{self.async_id}-{self.run}-{self.job_index}"
        if self.client_key:
            return hashlib.sha256(f"{self.account}\n{self.client_key}".encode()).hexdigest()[:32]
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer passed on as it came, such as an upstream API's status and JSON body."""

    status: int
    body: bytes


# Serves a whole namespace: (namespace, action, params as JSON text, ctx) -> the reply to pass on.
Forward = Callable[[str, str, str, ActionContext], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Action:
    namespace: str
    name: str
    handler: Handler
    signature: inspect.Signature
    is_async: bool
    schema: ParamsSchema

    @property
    def wants_ctx(self) -> bool:
        return CONTEXT_PARAMETER in self.signature.parameters

    async def __call__(self, params: dict[str, Any], ctx: ActionContext) -> Any:
        kwargs = self.schema.validate(params)
        if self.wants_ctx:
            kwargs[CONTEXT_PARAMETER] = ctx
        if self.is_async:
            return await self.handler(**kwargs)
        return await asyncio.to_thread(self.handler, **kwargs)


class App:
    """An application: the actions it serves, registered with `@app.action(namespace, name)`, and the
    namespaces it forwards upstream (gateway mode) with `mount`."""

    def __init__(self) -> None:
        self._actions: dict[tuple[str, str], Action] = {}
        self._mounts: dict[str, Forward] = {}
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def startup(self) -> None:
        """Runs the start-up hooks (opening upstream sessions, say) before the first call."""
        for hook in self.on_startup:
            await hook()

    async def shutdown(self) -> None:
        for hook in reversed(self.on_shutdown):
            await hook()

    def action(self, namespace: str, name: str) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.add(namespace, name, handler)
            return handler

        return register

    def add(self, namespace: str, name: str, handler: Handler) -> None:
        if namespace == RESERVED_NAMESPACE:
            raise ValueError("the 'batch' namespace is batchgate's own")
        if (namespace, name) in self._actions:
            raise ValueError(f"{namespace}.{name} is already registered")
        if namespace in self._mounts:
            raise ValueError(
                f"namespace {namespace} is forwarded upstream; it cannot also have Python actions"
            )
        label = f"{namespace}.{name}"
        self._actions[(namespace, name)] = Action(
            namespace,
            name,
            handler,
            inspect.signature(handler),
            inspect.iscoroutinefunction(handler),
            ParamsSchema.of(label, handler),
        )

    def mount(self, namespace: str, forward: Forward) -> None:
        """Serves every action of `namespace` through `forward` (gateway mode)."""
        if namespace == RESERVED_NAMESPACE:
            raise ValueError("the 'batch' namespace is batchgate's own")
        # One owner per namespace: a mount silently shadowing registered actions would be a surprise.
        if namespace in self._mounts or any(ns == namespace for ns, _ in self._actions):
            raise ValueError(f"namespace {namespace} is already served")
        self._mounts[namespace] = forward

    def include(self, other: App) -> None:
        """Serves another app's actions and mounts too."""
        for (namespace, name), action in other._actions.items():
            self.add(namespace, name, action.handler)
        for namespace, forward in other._mounts.items():
            self.mount(namespace, forward)
        self.on_startup.extend(other.on_startup)
        self.on_shutdown.extend(other.on_shutdown)

    def namespaces(self) -> list[str]:
        """Every namespace served, registered or forwarded, sorted."""
        return sorted({namespace for namespace, _ in self._actions} | set(self._mounts))

    def find(self, namespace: str, name: str) -> Action:
        action = self._actions.get((namespace, name))
        if action is None:
            raise NotFound(f"Unknown action {namespace}.{name}")
        return action

    async def run_job(self, namespace: str, name: str, params: str, ctx: ActionContext) -> bytes:
        """A batch job: the JSON of its response, which is the error body when the call failed."""
        return (await self.reply(namespace, name, params, ctx)).body

    async def reply(
        self, namespace: str, name: str, params: dict[str, Any] | str, ctx: ActionContext
    ) -> Reply:
        """One call, direct (params decoded) or a job (params as JSON text); never raises."""
        try:
            if namespace == RESERVED_NAMESPACE:
                raise Forbidden("A batch job may not call the batch namespace")
            forward = self._mounts.get(namespace)
            if forward is not None:
                text = params if isinstance(params, str) else orjson.dumps(params).decode()
                return await forward(namespace, name, text, ctx)
            action = self.find(namespace, name)
            value = await action(orjson.loads(params) if isinstance(params, str) else params, ctx)
            # Serialised here, not by the server, so a direct call fails exactly as its job would.
            return Reply(200, orjson.dumps(value))
        except WireError as exc:
            return Reply(exc.error_code, exc.to_json())
        except Exception:
            where = f"job {ctx.async_id}[{ctx.job_index}]" if ctx.async_id else "direct call"
            log.exception("%s %s.%s failed (account %s)", where, namespace, name, ctx.account)
            return Reply(InternalError.error_code, InternalError("The action failed unexpectedly").to_json())
