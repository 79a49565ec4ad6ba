"""`batchgate serve --otel` and `batchgate worker --otel` as an operator runs them: spans sent over
OTLP/HTTP to the collector OTEL_EXPORTER_OTLP_ENDPOINT names, the last of them flushed at stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from batchgate.client import Client

from processes import BATCHGATE, ServeProcess, batchgate, create_key


class Collector:
    """An OTLP/HTTP trace receiver on a loopback port, in a thread of its own."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    collector.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Span]:
        """Every span received, with its service's name."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {
                            a.key: a.value.string_value or a.value.int_value for a in span.attributes
                        }
                        links = [link.span_id for link in span.links]
                        found.append(
                            Span(resource["service.name"], span.name, attributes, span.span_id, links)
                        )
        return found


@dataclass
class Span:
    service: str
    name: str
    attributes: dict[str, object]
    span_id: bytes
    links: list[bytes]


@contextlib.contextmanager
def collector() -> Iterator[Collector]:
    receiving = Collector()
    thread = threading.Thread(target=receiving.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiving
    finally:
        receiving.server.shutdown()
        receiving.server.server_close()


def otel_env(otlp: Collector) -> dict[str, str]:
    return {
        "BATCHGATE_OTEL": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing sent before the stop's flush
    }


def run_a_batch(url: str, key: str, secret: str) -> str:
    with Client(url, key, secret) as api:
        async_id = api.run([{"namespace": "test", "action": "echo", "params": {"n": 1}}])
        api.wait(async_id, poll_s=0.05, timeout_s=20)
    return async_id


def test_serve_with_otel_exports_a_batch_s_spans_and_flushes_them_at_stop(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    with collector() as otlp:
        server = ServeProcess(sqlite_url, tmp_path / "serve.log", env=otel_env(otlp)).start()
        try:
            async_id = run_a_batch(server.url, key, secret)
            assert otlp.spans() == []
            assert server.signal(signal.SIGTERM) == -signal.SIGTERM
        finally:
            server.stop()
        spans = {span.name: span for span in otlp.spans()}
    assert sorted(spans) == ["batch.process", "batch.run", "job test.echo"], server.log.read_text()
    assert {span.service for span in spans.values()} == {"batchgate"}
    assert {span.attributes["batchgate.async_id"] for span in spans.values()} == {async_id}
    assert spans["batch.process"].links == [spans["batch.run"].span_id]  # one process saw both


def test_an_api_process_and_a_worker_process_both_export_and_flush_at_stop(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    log = tmp_path / "processes.log"
    with collector() as otlp:
        env = {**otel_env(otlp), "OTEL_SERVICE_NAME": "bg"}
        api = ServeProcess(sqlite_url, log, env=env, args=["--no-worker"]).start()
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [BATCHGATE, "worker", "--db", sqlite_url, "--poll-interval", "0.1"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        try:
            async_id = run_a_batch(api.url, key, secret)
            os.killpg(worker.pid, signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log.read_text()
            assert api.signal(signal.SIGTERM) == -signal.SIGTERM
        finally:
            api.stop()
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
        spans = {span.name: span for span in otlp.spans()}
    assert sorted(spans) == ["batch.process", "batch.run", "job test.echo"], log.read_text()
    assert {span.service for span in spans.values()} == {"bg"}
    # the worker's process never saw the run: its span links to it through the stored traceparent
    assert {span.attributes["batchgate.async_id"] for span in spans.values()} == {async_id}
    assert spans["batch.process"].links == [spans["batch.run"].span_id]


def test_otel_that_cannot_be_set_up_is_refused_before_anything_starts(sqlite_url: str) -> None:
    for command in ("serve", "worker"):
        refused = batchgate(
            command, "--db", sqlite_url, "--otel", env={"OTEL_TRACES_EXPORTER": "zipkin"}, check=False
        )
        assert refused.returncode == 2
        assert "OTEL_TRACES_EXPORTER=zipkin" in refused.stderr
        assert "Traceback" not in refused.stderr
