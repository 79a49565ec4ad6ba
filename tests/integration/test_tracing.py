"""Tracing over real HTTP: a gateway-mode batch run against a stub upstream and a callback receiver,
its spans kept by the SDK's in-memory exporter: their names, attributes, parents and links, the
traceparent each outgoing request carries, and nothing at all with tracing off."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from batchgate import tracing
from batchgate.actions.testing import builtin_actions
from batchgate.client import build_request
from batchgate.config import build_app, load_config
from batchgate.settings import Settings
from batchgate.worker import Worker

from support import LiveServer, eventually, live_server, receiver


@dataclass
class Upstream:
    """An upstream on a loopback port: answers each action's planned statuses in turn (200 once
    they run out), and keeps the headers of every call."""

    url: str = ""
    plan: dict[str, list[int]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (action, headers)

    async def handle(self, request: web.Request) -> web.Response:
        action = request.query["action"]
        self.calls.append((action, dict(request.headers)))
        planned = self.plan.get(action)
        status = planned.pop(0) if planned else 200
        body = {"errorCode": status, "message": f"{action} refused"} if status >= 400 else {"ok": action}
        return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def upstream(**plan: list[int]) -> AsyncIterator[Upstream]:
    stub = Upstream(plan={action: list(statuses) for action, statuses in plan.items()})
    app = web.Application()
    app.router.add_post("/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stub.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield stub
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def gateway(settings: Settings, tmp_path: Path, stub: Upstream) -> AsyncIterator[LiveServer]:
    """batchgate serving the `event` namespace forwarded to the stub, with quick retries."""
    path = tmp_path / "batchgate.toml"
    path.write_text(
        "[upstreams.events]\n"
        f'base_url = "{stub.url}"\nnamespaces = ["event"]\nkey = "k"\nsecret = "s"\n'
        "retry_delays_s = [0.05]\n"
    )
    async with live_server(settings, build_app(load_config(path))) as server:
        yield server


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    tracing.stop()
    provider.shutdown()


JOBS = [
    {"namespace": "event", "action": "add", "params": {"n": 1}},
    {"namespace": "event", "action": "flaky", "params": {"n": 2}, "id": "second"},
    {"namespace": "event", "action": "refused", "params": {"n": 3}},
]
PLAN = {"flaky": [503], "refused": [400]}  # flaky: a retry then its answer; refused: a failed job


async def run_batch(server: LiveServer, callback_url: str, headers: dict[str, str]) -> str:
    """batch.run sent as a traced client would, with its own headers (a traceparent)."""
    params = {"jobs": JOBS, "callbackUrl": callback_url}
    uri, body, signed = build_request(server.key.key, server.key.secret, "batch", "run", params)
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + uri, data=body, headers={**signed, **headers}) as answer,
    ):
        assert answer.status == 200, await answer.read()
        async_id = orjson.loads(await answer.read())["asyncId"]
    async with server.client() as api:
        await api.wait(async_id, poll_s=0.02, timeout_s=20)
    return str(async_id)


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [found] = [span for span in spans if span.name == name]
    return found


async def test_a_gateway_batch_is_one_trace_from_the_run_to_its_callback(
    settings: Settings, tmp_path: Path, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    tracing.enable(tracer_provider)
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with upstream(**PLAN) as stub, receiver() as recv, gateway(settings, tmp_path, stub) as server:
        async_id = await run_batch(
            server, f"{recv.url}/cb", {"traceparent": f"00-{client_trace}-{client_span}-01"}
        )
        [delivered] = await recv.wait_for("/cb", 1)
        spans = await eventually(
            lambda: list(exporter.get_finished_spans()), until=lambda s: any(x.name == "callback" for x in s)
        )

    assert sorted(span.name for span in spans) == [
        "batch.process",
        "batch.run",
        "callback",
        "job event.add",
        "job event.flaky",
        "job event.refused",
        "upstream events",
        "upstream events",
        "upstream events",
        "upstream events",  # the flaky job's 503, then its answer
    ]
    assert all(span.attributes and span.attributes["batchgate.async_id"] == async_id for span in spans)

    # the API's span continues the client's trace
    run = one(spans, "batch.run")
    assert run.kind is SpanKind.SERVER
    assert run.parent is not None and run.parent.is_remote
    assert (f"{run.context.trace_id:032x}", f"{run.parent.span_id:016x}") == (client_trace, client_span)
    assert run.attributes is not None
    assert (run.attributes["batchgate.account"], run.attributes["batchgate.job_count"]) == ("acme", 3)
    assert run.attributes["http.response.status_code"] == 200

    # the worker's span of the batch: a trace of its own, linked to the run that made it
    batch = one(spans, "batch.process")
    assert batch.kind is SpanKind.CONSUMER and batch.parent is None
    assert [link.context for link in batch.links] == [run.context]
    assert batch.attributes is not None
    assert {key: batch.attributes[key] for key in ("batchgate.run", "batchgate.job_count")} == {
        "batchgate.run": 1,
        "batchgate.job_count": 3,
    }
    assert (batch.attributes["batchgate.jobs.succeeded"], batch.attributes["batchgate.jobs.failed"]) == (2, 1)

    # a span per job under it, in the batch's trace
    jobs = {span.attributes["batchgate.job.index"]: span for span in spans if span.name.startswith("job ")}
    assert sorted(jobs) == [0, 1, 2]
    for index, job in jobs.items():
        assert job.parent is not None and job.parent.span_id == batch.context.span_id
        assert job.context.trace_id == batch.context.trace_id
        assert job.attributes is not None
        assert job.attributes["batchgate.job.namespace"] == "event"
        assert job.attributes["batchgate.job.action"] == JOBS[index]["action"]
    assert jobs[1].attributes is not None and jobs[1].attributes["batchgate.job.id"] == "second"
    outcomes = [(job.attributes or {}).get("batchgate.job.outcome") for _, job in sorted(jobs.items())]
    assert outcomes == ["succeeded", "succeeded", "failed"]
    assert [(job.attributes or {}).get("batchgate.job.attempts") for _, job in sorted(jobs.items())] == [
        1,
        2,
        1,
    ]
    assert jobs[2].status.status_code is StatusCode.ERROR
    assert jobs[2].attributes is not None and jobs[2].attributes["batchgate.error_code"] == 400
    assert jobs[0].status.status_code is StatusCode.UNSET

    # a client span per HTTP attempt under its job, whose traceparent the upstream got
    calls = sorted(
        (span for span in spans if span.name == "upstream events"), key=lambda s: s.start_time or 0
    )
    by_job = [
        (
            span.parent.span_id if span.parent else None,
            (span.attributes or {}).get("http.response.status_code"),
        )
        for span in calls
    ]
    assert by_job == [
        (jobs[0].context.span_id, 200),
        (jobs[1].context.span_id, 503),
        (jobs[1].context.span_id, 200),
        (jobs[2].context.span_id, 400),
    ]
    assert all(span.kind is SpanKind.CLIENT for span in calls)
    assert calls[0].attributes is not None and calls[0].attributes["batchgate.job.index"] == 0
    assert calls[0].attributes["server.address"] == "127.0.0.1"
    assert [headers["traceparent"] for _, headers in stub.calls] == [traceparent(span) for span in calls]

    # the callback: a client span linked to the batch's, whose traceparent the receiver got
    callback = one(spans, "callback")
    assert callback.kind is SpanKind.CLIENT
    assert [link.context for link in callback.links] == [batch.context]
    assert callback.attributes is not None
    assert callback.attributes["batchgate.webhook_id"] == delivered.headers["webhook-id"]
    assert callback.attributes["batchgate.callback.attempt"] == 1
    assert callback.attributes["http.response.status_code"] == 200
    assert delivered.headers["traceparent"] == traceparent(callback)


async def test_a_worker_in_another_process_links_its_batch_to_the_run_that_made_it(
    each_store_settings: Settings, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """`serve --no-worker` beside a `worker`: the worker has seen no `batch.run`, and links its
    `batch.process` to the one whose traceparent was stored with the batch."""
    tracer_provider, exporter = provider
    tracing.enable(tracer_provider)
    async with live_server(each_store_settings, run_worker=False) as api_only, api_only.client() as api:
        async_id = await api.run([{"namespace": "test", "action": "echo", "params": {"n": 1}}])
        tracing.enable(tracer_provider)  # the worker's process: the same exporter, nothing remembered
        await Worker(api_only.service.store, builtin_actions(sleep_cap_s=1)).run(until_idle=True)
        assert (await api.progress(async_id)) == 100

    spans = list(exporter.get_finished_spans())
    run, batch = one(spans, "batch.run"), one(spans, "batch.process")
    assert batch.parent is None and batch.context.trace_id != run.context.trace_id  # a trace of its own
    [link] = batch.links
    assert (link.context.trace_id, link.context.span_id) == (run.context.trace_id, run.context.span_id)


async def test_a_failed_callback_attempt_is_an_error_span_and_the_retry_another(
    settings: Settings, tmp_path: Path, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    tracing.enable(tracer_provider)
    async with receiver() as recv, live_server(settings) as server:
        recv.plan["/cb"] = [500]
        async with server.client() as api:
            async_id = await api.run([{"namespace": "test", "action": "ping"}], callback_url=f"{recv.url}/cb")
        await recv.wait_for("/cb", 2)
        spans = await eventually(
            lambda: [s for s in exporter.get_finished_spans() if s.name == "callback"],
            until=lambda s: len(s) == 2,
        )
    first, second = sorted(spans, key=lambda s: (s.attributes or {})["batchgate.callback.attempt"])
    assert [(s.attributes or {})["http.response.status_code"] for s in (first, second)] == [500, 200]
    assert [s.status.status_code for s in (first, second)] == [StatusCode.ERROR, StatusCode.UNSET]
    assert {(s.attributes or {})["batchgate.async_id"] for s in spans} == {async_id}
    assert [call.headers["traceparent"] for call in recv.received("/cb")] == [
        traceparent(first),
        traceparent(second),
    ]


async def test_a_refused_run_is_a_span_with_its_error_code_not_an_error(
    settings: Settings, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    tracing.enable(tracer_provider)
    async with live_server(settings) as server, server.client() as api:
        with pytest.raises(Exception, match="jobs"):
            await api.call("batch", "run", {"jobs": []})
        await api.progress(await api.run([{"namespace": "test", "action": "ping"}]))  # not traced: a read
    spans = list(exporter.get_finished_spans())
    refused, accepted = sorted((s for s in spans if s.name == "batch.run"), key=lambda s: s.start_time or 0)
    assert refused.parent is None  # no traceparent came with it: a trace of its own
    assert refused.attributes is not None and refused.attributes["batchgate.error_code"] == 400
    assert refused.attributes["http.response.status_code"] == 400
    assert "batchgate.async_id" not in refused.attributes
    assert refused.status.status_code is StatusCode.UNSET  # the client's mistake, not the server's
    assert accepted.attributes is not None and "batchgate.async_id" in accepted.attributes


async def test_with_tracing_off_no_span_is_made_and_no_traceparent_sent(
    settings: Settings, tmp_path: Path, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = provider  # a provider that nothing is told to use
    assert not tracing.enabled()
    async with upstream(**PLAN) as stub, receiver() as recv, gateway(settings, tmp_path, stub) as server:
        await run_batch(server, f"{recv.url}/cb", {})
        [delivered] = await recv.wait_for("/cb", 1)
    assert len(stub.calls) == 4
    assert exporter.get_finished_spans() == ()
    assert not any("traceparent" in headers for _, headers in stub.calls)
    assert "traceparent" not in delivered.headers
