"""The registry of actions: `(namespace, action) -> handler`, shared by direct calls and batch jobs.

A handler takes the call's params as keyword arguments (and `ctx` when it declares one), validated
first against the schema its signature declares (`schema.py`), returns any JSON-serialisable
value, and may raise a `WireError` to answer with its own codes. A direct call and a batch job of
the same action get the same answer, byte for byte: both go through `App.reply`.

Where a handler runs, and for how long:

- `async def` runs on the event loop; past its timeout it is cancelled.
- a plain `def` runs in the app's thread pool, so it never blocks the event loop; past its
  timeout the call is answered 461 / 29031, but Python cannot stop a thread: the function runs
  on until it returns, holding its thread, and its result is dropped.
- `process=True` runs a plain `def` in a pool of worker processes (CPU-bound work, or code that
  may hang): past its timeout, or when its batch is cancelled, its process is stopped and
  replaced. Its params, ctx and answer must pickle, and it must be importable by name.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import multiprocessing
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pebble

from batchgate.actions.deadlines import Deadlines
from batchgate.actions.schema import CONTEXT_PARAMETER, ParamsSchema
from batchgate.protocol.errors import (
    JOB_TIMED_OUT,
    BadRequest,
    FailedRequest,
    Forbidden,
    InternalError,
    NotFound,
    WireError,
)

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)
RESERVED_NAMESPACE = "batch"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_THREADS = 32
DEFAULT_PROCESSES = 2


@dataclass(slots=True)  # one per job: not frozen, which costs 3-4x to create (models.JobSpec)
class ActionContext:
    """Who is calling, and for a batch job, which one (`async_id` is None for a direct call).
    Each call has its own, to read."""

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


@dataclass(slots=True)  # one per job: not frozen, which costs 3-4x to create (models.JobSpec)
class Reply:
    """An answer passed on as it came, such as an upstream API's status and JSON body; `attempts`
    is how many tries it took (an upstream call may be retried)."""

    status: int
    body: bytes
    attempts: int = 1


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
    timeout_s: float | None  # None: the app's default
    read_only: bool  # changes nothing, so a repeated signed call may run it again
    process: bool  # runs in a worker process

    @property
    def wants_ctx(self) -> bool:
        return CONTEXT_PARAMETER in self.signature.parameters

    @property
    def cancellable(self) -> bool:
        """Whether a call in flight can be stopped (a thread cannot)."""
        return self.is_async or self.process


class App:
    """An application: the actions it serves, registered with `@app.action(namespace, name)`, and the
    namespaces it forwards upstream (gateway mode) with `mount`."""

    def __init__(
        self,
        *,
        timeout_s: float | None = None,
        threads: int = DEFAULT_THREADS,
        processes: int = DEFAULT_PROCESSES,
    ) -> None:
        # For actions that set none of their own; None: the serving process's (--job-timeout). The
        # pools belong to the App that is served: batchgate serve sets them (--action-threads...).
        self.timeout_s = timeout_s
        self.threads = threads
        self.processes = processes
        self._actions: dict[tuple[str, str], Action] = {}
        self._mounts: dict[str, Forward] = {}
        self._read_only_mounted: set[tuple[str, str]] = set()
        self._busy: dict[str, Callable[[], bool]] = {}  # forwarded namespace -> is its upstream full?
        self._thread_pool: ThreadPoolExecutor | None = None
        self._in_threads: set[Future[Any]] = set()
        self._process_pool: pebble.ProcessPool | None = None
        self._deadlines = Deadlines()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def startup(self) -> None:
        """Starts the pools and runs the start-up hooks (opening upstream sessions, say) before the
        first call."""
        self._thread_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="batchgate-action")
        if any(action.process for action in self._actions.values()):
            # spawn, not fork: this process has threads, and a forked child would inherit their locks
            context = multiprocessing.get_context("spawn")
            self._process_pool = pebble.ProcessPool(max_workers=self.processes, context=context)
        for hook in self.on_startup:
            await hook()

    async def shutdown(self) -> None:
        for hook in reversed(self.on_shutdown):
            await hook()
        self._deadlines.close()
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False)  # a thread still running cannot be stopped
        if self._process_pool is not None:
            self._process_pool.stop()  # type: ignore[no-untyped-call]
            self._process_pool.join()

    def action(
        self,
        namespace: str,
        name: str,
        *,
        timeout_s: float | None = None,
        read_only: bool = False,
        process: bool = False,
    ) -> Callable[[H], H]:
        """Registers a handler. `timeout_s` overrides the app's; `read_only` says the action changes
        nothing (so a repeated signed call may run it again); `process` runs a plain `def` in a
        worker process, which its timeout or a cancel can stop."""

        def register(handler: H) -> H:
            self.add(namespace, name, handler, timeout_s=timeout_s, read_only=read_only, process=process)
            return handler

        return register

    def add(
        self,
        namespace: str,
        name: str,
        handler: Handler,
        *,
        timeout_s: float | None = None,
        read_only: bool = False,
        process: bool = False,
    ) -> None:
        if namespace == RESERVED_NAMESPACE:
            raise ValueError("the 'batch' namespace is batchgate's own")
        if (namespace, name) in self._actions:
            raise ValueError(f"{namespace}.{name} is already registered")
        if namespace in self._mounts:
            raise ValueError(
                f"namespace {namespace} is forwarded upstream; it cannot also have Python actions"
            )
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"{namespace}.{name}: timeout_s must be positive")
        is_async = inspect.iscoroutinefunction(handler)
        if process and is_async:
            raise ValueError(f"{namespace}.{name}: process=True runs a plain def, not an async one")
        label = f"{namespace}.{name}"
        self._actions[(namespace, name)] = Action(
            namespace,
            name,
            handler,
            inspect.signature(handler),
            is_async,
            ParamsSchema.of(label, handler),
            timeout_s,
            read_only,
            process,
        )

    def mount(
        self,
        namespace: str,
        forward: Forward,
        *,
        read_only: Collection[str] = (),
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """Serves every action of `namespace` through `forward` (gateway mode); the actions named in
        `read_only` change nothing, so a repeated signed call of one may be forwarded again; `busy`
        says when a call made now would wait for the upstream (its slots are all taken)."""
        if namespace == RESERVED_NAMESPACE:
            raise ValueError("the 'batch' namespace is batchgate's own")
        # One owner per namespace: a mount silently shadowing registered actions would be a surprise.
        if namespace in self._mounts or any(ns == namespace for ns, _ in self._actions):
            raise ValueError(f"namespace {namespace} is already served")
        self._mounts[namespace] = forward
        self._read_only_mounted.update((namespace, name) for name in read_only)
        if busy is not None:
            self._busy[namespace] = busy

    def include(self, other: App) -> None:
        """Serves another app's actions and mounts too, each action with its own options."""
        for (namespace, name), action in other._actions.items():
            self.add(
                namespace,
                name,
                action.handler,
                timeout_s=action.timeout_s or other.timeout_s,  # the other app's default goes along
                read_only=action.read_only,
                process=action.process,
            )
        for namespace, forward in other._mounts.items():
            read_only = [name for ns, name in other._read_only_mounted if ns == namespace]
            self.mount(namespace, forward, read_only=read_only, busy=other._busy.get(namespace))
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

    def read_only(self, namespace: str, name: str) -> bool:
        """Whether a call changes nothing (an unknown action changes nothing either)."""
        if namespace in self._mounts:
            return (namespace, name) in self._read_only_mounted
        action = self._actions.get((namespace, name))
        return action is None or action.read_only

    def metric_label(self, namespace: str, name: str) -> str:
        """How an action is named in metrics: its name when registered, `namespace.*` when
        forwarded (a client may name any action there), `other` otherwise: a bounded set."""
        if (namespace, name) in self._actions:
            return f"{namespace}.{name}"
        return f"{namespace}.*" if namespace in self._mounts else "other"

    def busy_namespaces(self) -> list[str]:
        """The forwarded namespaces whose upstream has no free slot now."""
        return [namespace for namespace, busy in self._busy.items() if busy()]

    def busy(self, namespace: str) -> bool:
        check = self._busy.get(namespace)
        return check is not None and check()

    def cancellable(self, namespace: str, name: str) -> bool:
        """Whether a call in flight can be stopped: a forwarded one, an async or process action."""
        action = self._actions.get((namespace, name))
        return namespace in self._mounts or action is None or action.cancellable

    async def reply(
        self, namespace: str, name: str, params: dict[str, Any] | str, ctx: ActionContext
    ) -> Reply:
        """One call, direct (params decoded) or a job (params as JSON text): the status and JSON body
        to answer, an error body included; never raises (but a cancelled call is cancelled)."""
        try:
            if namespace == RESERVED_NAMESPACE:
                raise Forbidden("A batch job may not call the batch namespace")
            forward = self._mounts.get(namespace)
            if forward is not None:
                return await forward(namespace, name, _as_text(params), ctx)
            action = self.find(namespace, name)
            value = await self._call(action, orjson.loads(params) if isinstance(params, str) else params, ctx)
            # Serialised here, not by the server, so a direct call fails exactly as its job would.
            return Reply(200, orjson.dumps(value))
        except WireError as exc:
            return Reply(exc.error_code, exc.to_json())
        except Exception:
            where = f"job {ctx.async_id}[{ctx.job_index}]" if ctx.async_id else "direct call"
            log.exception("%s %s.%s failed (account %s)", where, namespace, name, ctx.account)
            return Reply(InternalError.error_code, InternalError("The action failed unexpectedly").to_json())

    async def _call(self, action: Action, params: dict[str, Any], ctx: ActionContext) -> Any:
        kwargs = action.schema.validate(params)
        if action.wants_ctx:
            kwargs[CONTEXT_PARAMETER] = ctx
        timeout_s = action.timeout_s or self.timeout_s or DEFAULT_TIMEOUT_S
        call = self._deadlines.start(timeout_s)
        try:
            return await self._run(action, kwargs, timeout_s)
        except asyncio.CancelledError:
            if not self._deadlines.finish(call):
                raise  # a cancel from elsewhere, not the deadline
            if not action.cancellable:
                log.warning(
                    "%s.%s did not return within %g s; it runs on in its thread, and its result "
                    "will be dropped",
                    action.namespace,
                    action.name,
                    timeout_s,
                )
            raise FailedRequest(
                f"{action.namespace}.{action.name} did not answer within {timeout_s:g} s",
                specific_code=JOB_TIMED_OUT,
            ) from None
        finally:
            self._deadlines.finish(call)

    async def _run(self, action: Action, kwargs: dict[str, Any], timeout_s: float) -> Any:
        if action.is_async:
            return await action.handler(**kwargs)
        if action.process:
            if self._process_pool is None:
                raise RuntimeError("the app was not started")
            # pebble stops the worker process when its timeout passes or the future is cancelled
            future = self._process_pool.schedule(action.handler, kwargs=kwargs, timeout=timeout_s)
            try:
                return await asyncio.wrap_future(future)
            finally:
                future.cancel()  # type: ignore[no-untyped-call]
        if self._thread_pool is None:
            raise RuntimeError("the app was not started")
        in_thread = self._thread_pool.submit(functools.partial(action.handler, **kwargs))
        # Counted until the thread returns, which may be after a timeout gave up waiting for it.
        self._in_threads.add(in_thread)
        in_thread.add_done_callback(self._in_threads.discard)
        return await asyncio.wrap_future(in_thread)

    @property
    def threads_full(self) -> bool:
        """Whether every action thread is taken: another sync action would wait for one."""
        return len(self._in_threads) >= self.threads


def _as_text(params: dict[str, Any] | str) -> str:
    if isinstance(params, str):
        return params
    try:
        return orjson.dumps(params).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than the JSON writer goes
        raise BadRequest("The params cannot be forwarded", additional_messages=[str(exc)]) from None
