"""Optional tracing with OpenTelemetry: spans for each `batch.run`, each batch a worker runs, each
of its jobs, each call forwarded to an upstream and each callback attempt, all carrying the
batch's asyncId (docs/tracing.md).

Off unless `batchgate serve|worker --otel` (`BATCHGATE_OTEL=1`) turns it on, which needs the
`otel` extra; the exporter, the service name and the sampler come from the standard `OTEL_*`
variables. This module imports nothing of OpenTelemetry: `batchgate._otel` does, and is imported
when tracing is turned on. Until then each hook below is a plain call that hands back what it was
given (the decorated coroutine itself, no extra frame): a job pays about 0.1 µs for it.

The hooks sit at the edges of the modules they trace:

    server/app.py          batch_call        the `batch.run` span, child of the client's traceparent
    batches.py             traceparent       that span's, stored with the batch it makes
    runner.py              batch_run, job    the worker's span of a batch, one child span per job
    actions/upstream.py    upstream_attempt  one client span per HTTP attempt; `inject` its traceparent
    delivery.py            callback_attempt  one client span per callback attempt; `inject` likewise
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from batchgate.protocol.errors import BatchgateError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from batchgate._otel import Spans
    from batchgate.actions.upstream import Attempt, Call, Upstream
    from batchgate.batches import Caller
    from batchgate.delivery import Deliverer
    from batchgate.models import Delivery, Finished, JobSpec
    from batchgate.runner import BatchRun

_spans: Spans | None = None  # None: tracing is off, and every hook is a no-op


class TracingError(BatchgateError):
    """Tracing was asked for and cannot be set up."""


def check() -> None:
    """Raises TracingError when `setup()` would: the otel extra missing, or an OTEL_* value
    batchgate cannot act on. For the command line, to refuse before anything starts."""
    with _needs_otel():
        from batchgate import _otel

        _otel.exporters()


def setup() -> None:
    """Turns tracing on for this process: with the tracer provider already installed (by
    `opentelemetry-instrument`, say), or else a new one from the OTEL_* variables, made global so
    that the actions' own spans nest under their job's."""
    global _spans
    if _spans is None:
        with _needs_otel():
            from batchgate import _otel

            _spans = _otel.configured()


def enable(provider: TracerProvider) -> None:
    """Turns tracing on with the given provider (tests, and programs that embed batchgate)."""
    global _spans
    from batchgate._otel import Spans

    _spans = Spans(provider)


def stop() -> None:
    """Flushes the spans not yet exported, and turns tracing off."""
    global _spans
    spans, _spans = _spans, None
    if spans is not None:
        spans.flush()


def enabled() -> bool:
    return _spans is not None


@contextlib.contextmanager
def _needs_otel() -> Iterator[None]:
    try:
        yield
    except ImportError as exc:
        raise TracingError(
            f"tracing needs OpenTelemetry ({exc.name} is missing): pip install 'batchgate[otel]'"
        ) from exc


# the hooks ---------------------------------------------------------------------------------------


def batch_call(
    handle: Callable[[Caller, str, Any], Awaitable[Any]],
    caller: Caller,
    action: str,
    params: Any,
    headers: Mapping[str, str],
) -> Awaitable[Any]:
    """`handle(caller, action, params)`: a call of the batch namespace; a `run` in a span."""
    spans = _spans
    if spans is None or action != "run":
        return handle(caller, action, params)
    return spans.run_call(handle, caller, params, headers)


def batch_run(
    run: Callable[[BatchRun], Coroutine[Any, Any, None]],
) -> Callable[[BatchRun], Coroutine[Any, Any, None]]:
    """Decorates `BatchRun.run`: the batch's span on the worker, which its jobs' spans are under."""

    @functools.wraps(run)
    def traced(batch: BatchRun) -> Coroutine[Any, Any, None]:
        spans = _spans
        return run(batch) if spans is None else spans.batch(run, batch)

    return traced


def job(
    run_job: Callable[[BatchRun, int, JobSpec], Coroutine[Any, Any, Finished]],
) -> Callable[[BatchRun, int, JobSpec], Coroutine[Any, Any, Finished]]:
    """Decorates `BatchRun._run_job`: a span per job, with its outcome and attempts."""

    @functools.wraps(run_job)
    def traced(batch: BatchRun, index: int, spec: JobSpec) -> Coroutine[Any, Any, Finished]:
        spans = _spans
        return run_job(batch, index, spec) if spans is None else spans.job(run_job, batch, index, spec)

    return traced


def upstream_attempt(
    attempt: Callable[[Upstream, Call], Coroutine[Any, Any, Attempt]],
) -> Callable[[Upstream, Call], Coroutine[Any, Any, Attempt]]:
    """Decorates `Upstream._attempt`: a client span per HTTP attempt of a forwarded call."""

    @functools.wraps(attempt)
    def traced(upstream: Upstream, call: Call) -> Coroutine[Any, Any, Attempt]:
        spans = _spans
        return attempt(upstream, call) if spans is None else spans.upstream(attempt, upstream, call)

    return traced


PostResult = tuple[int | None, str | None, float | None]


def callback_attempt(
    post: Callable[[Deliverer, Delivery, bytes], Coroutine[Any, Any, PostResult]],
) -> Callable[[Deliverer, Delivery, bytes], Coroutine[Any, Any, PostResult]]:
    """Decorates `Deliverer._post`: a client span per callback attempt."""

    @functools.wraps(post)
    def traced(deliverer: Deliverer, delivery: Delivery, body: bytes) -> Coroutine[Any, Any, PostResult]:
        spans = _spans
        if spans is None:
            return post(deliverer, delivery, body)
        return spans.callback(post, deliverer, delivery, body)

    return traced


def traceparent() -> str | None:
    """The current span's W3C traceparent, stored with the batch a `batch.run` makes, so that a
    worker in another process links to it; None while tracing is off."""
    spans = _spans
    return None if spans is None else spans.traceparent()


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's `traceparent` (W3C Trace Context) to an outgoing request's headers."""
    spans = _spans
    if spans is not None:
        spans.inject(headers)
