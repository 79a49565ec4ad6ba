"""The OpenTelemetry side of `batchgate.tracing`, imported only once tracing is turned on.

Names: `batch.run` (the API call that accepts a batch, SERVER), `batch.process` (a worker's run of
a batch, CONSUMER), `job <namespace>.<action>` (one job), `upstream <name>` (one HTTP attempt of a
forwarded call, CLIENT) and `callback` (one callback attempt, CLIENT). Every span carries
`batchgate.async_id`. A batch's spans on the worker are one trace; the API's `batch.run` is in its
client's. `batch.process` links to the `batch.run` that made it, and `callback` to the
`batch.process` that finished it, when the same process saw both (`serve` with its worker); across
processes the asyncId ties them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from yarl import URL

from batchgate import __version__
from batchgate.models import JobOutcome
from batchgate.protocol.errors import WireError
from batchgate.runner import LeaseLost
from batchgate.tracing import TracingError

if TYPE_CHECKING:
    from batchgate.actions.upstream import Attempt, Call, Upstream
    from batchgate.batches import Caller
    from batchgate.delivery import Deliverer
    from batchgate.models import Delivery, Finished, JobSpec
    from batchgate.runner import BatchRun
    from batchgate.tracing import PostResult

log = logging.getLogger(__name__)

ASYNC_ID = "batchgate.async_id"
ACCOUNT = "batchgate.account"
RUN = "batchgate.run"  # 1, then one more for each restart
JOB_COUNT = "batchgate.job_count"
PENDING = "batchgate.pending"  # jobs the worker's lease holds (fewer than job_count when resumed)
CONCURRENCY = "batchgate.concurrency"
JOB_INDEX = "batchgate.job.index"
JOB_ID = "batchgate.job.id"  # a workflow job's client-given id
NAMESPACE = "batchgate.job.namespace"
ACTION = "batchgate.job.action"
OUTCOME = "batchgate.job.outcome"
ATTEMPTS = "batchgate.job.attempts"
ERROR_CODE = "batchgate.error_code"
SPECIFIC_CODE = "batchgate.specific_code"
UPSTREAM = "batchgate.upstream"
WEBHOOK_ID = "batchgate.webhook_id"
CALLBACK_ATTEMPT = "batchgate.callback.attempt"
LEASE_LOST = "batchgate.lease_lost"

MAX_NAME = 120  # characters of a job span's name: a client names the action
RECENT = 4096  # span contexts remembered for links, per process
_W3C = TraceContextTextMapPropagator()  # a traceparent stored with a batch, whatever OTEL_PROPAGATORS says

Facts = Mapping[str, AttributeValue]
_NO_FACTS: Facts = MappingProxyType({})
# What every span under a batch (or a job) carries: its asyncId (and job index). A job's task
# inherits its batch's, and an upstream attempt its job's.
_facts: ContextVar[Facts] = ContextVar("batchgate_trace_facts", default=_NO_FACTS)


class Spans:
    """Makes batchgate's spans with one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("batchgate", __version__)
        self.recent: dict[str, SpanContext] = {}  # asyncId -> the last span of it, to link to

    def flush(self, timeout_s: float = 10.0) -> None:
        """Exports what is left; a collector that does not answer holds a stop up `timeout_s` at most."""
        self.recent.clear()
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None and not flush(timeout_millis=int(timeout_s * 1000)):
            log.warning("tracing: some spans could not be exported within %g s", timeout_s)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        propagate.inject(headers)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier.get("traceparent")

    # links between one batch's traces --------------------------------------------------------
    def _remember(self, async_id: str, span: Span) -> None:
        context = span.get_span_context()
        if not context.is_valid:
            return
        self.recent.pop(async_id, None)
        self.recent[async_id] = context
        if len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]

    def _links(self, async_id: str, traceparent: str | None = None) -> list[Link]:
        """A link to the batch's last span in this process, or else to the span whose traceparent
        was stored with it (its `batch.run`, in the process that accepted it)."""
        context = self.recent.get(async_id)
        if context is None and traceparent:
            stored = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
            context = stored if stored.is_valid else None
        return [] if context is None else [Link(context)]

    # the API ---------------------------------------------------------------------------------
    async def run_call(
        self,
        handle: Callable[[Caller, str, Any], Awaitable[Any]],
        caller: Caller,
        params: Any,
        headers: Mapping[str, str],
    ) -> Any:
        jobs = params.get("jobs") if isinstance(params, dict) else None
        attributes: dict[str, AttributeValue] = {ACCOUNT: caller.account}
        if isinstance(jobs, list):
            attributes[JOB_COUNT] = len(jobs)
        with self._span(
            "batch.run", kind=SpanKind.SERVER, attributes=attributes, context=propagate.extract(headers)
        ) as span:
            answer = await handle(caller, "run", params)
            span.set_attribute("http.response.status_code", 200)
            async_id = answer.get("asyncId") if isinstance(answer, dict) else None
            if isinstance(async_id, str):
                span.set_attribute(ASYNC_ID, async_id)
                if async_id not in self.recent:  # a replay keeps the link to the run that made it
                    self._remember(async_id, span)
            return answer

    # the worker ------------------------------------------------------------------------------
    async def batch(self, run: Callable[[BatchRun], Coroutine[Any, Any, None]], batch: BatchRun) -> None:
        lease = batch.lease
        facts: Facts = {ASYNC_ID: lease.batch_id}
        attributes = {
            **facts,
            ACCOUNT: lease.account,
            RUN: lease.run,
            JOB_COUNT: lease.job_count,
            PENDING: len(lease.jobs),
            CONCURRENCY: lease.concurrency,
        }
        links = self._links(lease.batch_id, lease.traceparent)
        with self._span("batch.process", kind=SpanKind.CONSUMER, attributes=attributes, links=links) as span:
            self._remember(lease.batch_id, span)
            token = _facts.set(facts)
            try:
                await run(batch)
            finally:
                _facts.reset(token)
                if span.is_recording():
                    outcomes = list(batch.outcomes.values())
                    for outcome in JobOutcome:
                        span.set_attribute(f"batchgate.jobs.{outcome.value}", outcomes.count(outcome))

    async def job(
        self,
        run_job: Callable[[BatchRun, int, JobSpec], Coroutine[Any, Any, Finished]],
        batch: BatchRun,
        index: int,
        spec: JobSpec,
    ) -> Finished:
        if _sampled_out():
            return await run_job(batch, index, spec)
        facts: Facts = {**_facts.get(), JOB_INDEX: index}
        attributes = {**facts, NAMESPACE: spec.namespace, ACTION: spec.action}
        if spec.key is not None:
            attributes[JOB_ID] = spec.key
        name = f"job {spec.namespace}.{spec.action}"[:MAX_NAME]
        with self._span(name, attributes=attributes) as span:
            token = _facts.set(facts)
            try:
                finished = await run_job(batch, index, spec)
            except asyncio.CancelledError:  # stopped at the client's request, or the worker's stop
                span.set_attribute(OUTCOME, JobOutcome.CANCELLED.value)
                raise
            finally:
                _facts.reset(token)
            span.set_attributes({OUTCOME: finished.outcome.value, ATTEMPTS: finished.attempts})
            if finished.outcome is JobOutcome.FAILED:
                _failed_job(span, finished.response)
            return finished

    async def upstream(
        self,
        attempt: Callable[[Upstream, Call], Coroutine[Any, Any, Attempt]],
        upstream: Upstream,
        call: Call,
    ) -> Attempt:
        if _sampled_out():
            return await attempt(upstream, call)
        name = upstream.config.name
        attributes = {**_facts.get(), UPSTREAM: name, **_http_client(call.url, keep_query=True)}
        with self._span(f"upstream {name}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            answer = await attempt(upstream, call)
            _answered(span, answer.status, answer.error)
            return answer

    async def callback(
        self,
        post: Callable[[Deliverer, Delivery, bytes], Coroutine[Any, Any, PostResult]],
        deliverer: Deliverer,
        delivery: Delivery,
        body: bytes,
    ) -> PostResult:
        attributes = {
            ASYNC_ID: delivery.batch_id,
            WEBHOOK_ID: delivery.id,
            CALLBACK_ATTEMPT: delivery.attempts + 1,
            **_http_client(URL(delivery.url), keep_query=False),  # a receiver's query may hold a token
        }
        links = self._links(delivery.batch_id)
        with self._span("callback", kind=SpanKind.CLIENT, attributes=attributes, links=links) as span:
            answer = await post(deliverer, delivery, body)
            _answered(span, answer[0], answer[1])
            return answer

    # ---------------------------------------------------------------------------------------------
    @contextmanager
    def _span(
        self,
        name: str,
        *,
        attributes: Facts,
        kind: SpanKind = SpanKind.INTERNAL,
        links: list[Link] | None = None,
        context: Any = None,
    ) -> Iterator[Span]:
        """A span made current; an exception is recorded on it, and a client's error (a 4xx
        answer) is not the span's error."""
        with self.tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except WireError as exc:
                span.set_attributes({"http.response.status_code": exc.error_code, ERROR_CODE: exc.error_code})
                if exc.specific_code is not None:
                    span.set_attribute(SPECIFIC_CODE, exc.specific_code)
                if exc.error_code >= 500:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            except Exception as exc:
                if isinstance(exc, LeaseLost):  # the batch was restarted, or taken: not a failure
                    span.set_attribute(LEASE_LOST, True)
                    raise
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise


def _sampled_out() -> bool:
    """Whether the current span was sampled out: its children would be too (with each of the
    standard samplers), so they are not made; the traceparent sent says it was not sampled."""
    current = trace.get_current_span()
    return current.get_span_context().is_valid and not current.is_recording()


def _failed_job(span: Span, response: bytes) -> None:
    try:
        error = orjson.loads(response)
    except orjson.JSONDecodeError:
        error = None
    codes = error if isinstance(error, dict) else {}
    for key, attribute in (("errorCode", ERROR_CODE), ("specificCode", SPECIFIC_CODE)):
        if isinstance(codes.get(key), int):
            span.set_attribute(attribute, codes[key])
    span.set_status(Status(StatusCode.ERROR, str(codes.get("message") or "the job failed")[:200]))


def _http_client(url: URL, *, keep_query: bool) -> dict[str, AttributeValue]:
    """The HTTP client attributes of the semantic conventions; never a URL's credentials."""
    shown = url.with_user(None).with_fragment(None)
    if not keep_query:
        shown = shown.with_query(None)
    attributes: dict[str, AttributeValue] = {"http.request.method": "POST", "url.full": str(shown)}
    if url.host is not None:
        attributes["server.address"] = url.host
    if url.port is not None:
        attributes["server.port"] = url.port
    return attributes


def _answered(span: Span, status: int | None, error: str | None) -> None:
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attributes({"error.type": str(status)})
            span.set_status(Status(StatusCode.ERROR))
    else:
        span.set_attribute("error.type", "no_response")
        span.set_status(Status(StatusCode.ERROR, error or "no answer"))


# setting up from the OTEL_* variables ------------------------------------------------------------


def configured() -> Spans:
    """Spans with the tracer provider already installed, or a new one from the OTEL_* variables."""
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return Spans(current)  # installed by opentelemetry-instrument, or by the app
    provider = SdkTracerProvider(resource=resource())
    for exporter in exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Spans(provider)


def resource() -> Resource:
    """What OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say, the service named `batchgate` and
    its version batchgate's unless they say otherwise."""
    found = Resource.create()
    ours: dict[str, AttributeValue] = {}
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # the SDK's placeholder
        ours[SERVICE_NAME] = "batchgate"
    if SERVICE_VERSION not in found.attributes:
        ours[SERVICE_VERSION] = __version__
    return found.merge(Resource(ours))


def exporters() -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (comma-separated; `otlp` when unset): `otlp`,
    over HTTP with protobuf unless OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL says `grpc`, `console`, or
    `none`. Each reads its own OTEL_EXPORTER_OTLP_* settings (endpoint, headers, timeout...)."""
    chosen: list[SpanExporter] = []
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in filter(None, names):
        if name == "none":
            continue
        if name == "console":
            chosen.append(ConsoleSpanExporter())
        elif name == "otlp":
            chosen.append(_otlp())
        else:
            raise TracingError(f"OTEL_TRACES_EXPORTER={name}: batchgate knows otlp, console and none")
    return chosen


def _otlp() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        import importlib

        try:
            module = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError as exc:
            raise TracingError(
                "OTLP over gRPC needs opentelemetry-exporter-otlp-proto-grpc installed beside batchgate"
            ) from exc
        exporter: SpanExporter = module.OTLPSpanExporter()
        return exporter
    raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: batchgate sends http/protobuf or grpc")
