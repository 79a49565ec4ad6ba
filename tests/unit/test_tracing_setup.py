"""Tracing's set-up from the OTEL_* variables, its refusals, and its hooks costing nothing when off."""

from __future__ import annotations

import sys
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

import batchgate
from batchgate import _otel, tracing
from batchgate.models import JobSpec

OTEL_VARIABLES = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_service_is_named_batchgate_with_its_version_unless_the_variables_say() -> None:
    attributes = _otel.resource().attributes
    assert (attributes["service.name"], attributes["service.version"]) == ("batchgate", batchgate.__version__)


def test_otel_service_name_and_resource_attributes_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.version=7")
    attributes = _otel.resource().attributes
    assert attributes["service.name"] == "gateway-eu"
    assert attributes["service.version"] == "7"
    assert attributes["deployment.environment"] == "prod"


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        (None, [OTLPSpanExporter]),  # OTLP over HTTP, to OTEL_EXPORTER_OTLP_ENDPOINT
        ("otlp", [OTLPSpanExporter]),
        ("console", [ConsoleSpanExporter]),
        ("otlp, console", [OTLPSpanExporter, ConsoleSpanExporter]),
        ("none", []),
    ],
)
def test_otel_traces_exporter_chooses_the_exporters(
    monkeypatch: pytest.MonkeyPatch, value: str | None, kinds: list[type]
) -> None:
    if value is not None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    assert [type(exporter) for exporter in _otel.exporters()] == kinds


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "batchgate knows otlp, console and none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/protobuf or grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon", "http/protobuf or grpc"),
    ],
)
def test_what_batchgate_cannot_export_with_is_refused_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(tracing.TracingError, match=said):
        tracing.check()


def test_grpc_without_its_exporter_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(tracing.TracingError, match="opentelemetry-exporter-otlp-proto-grpc"):
        tracing.check()


def test_without_the_otel_extra_tracing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(batchgate, "_otel")
    monkeypatch.delitem(sys.modules, "batchgate._otel")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if it were not installed
    with pytest.raises(tracing.TracingError, match=r"pip install 'batchgate\[otel\]'"):
        tracing.setup()
    assert not tracing.enabled()


def test_a_provider_the_process_installed_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: installed)
    monkeypatch.setattr(trace, "set_tracer_provider", pytest.fail)
    assert _otel.configured().provider is installed


def test_otherwise_a_provider_is_made_from_the_variables_and_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed: list[Any] = []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw")
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    spans = _otel.configured()
    assert installed == [spans.provider]
    assert isinstance(spans.provider, TracerProvider)
    assert spans.provider.resource.attributes["service.name"] == "gw"


async def test_with_tracing_off_a_hook_hands_back_the_coroutine_it_wraps() -> None:
    """No extra coroutine, no span, nothing imported: what keeps tracing off free on the hot path."""

    async def run_job(batch: Any, index: int, spec: JobSpec) -> Any:
        return index

    assert not tracing.enabled()
    coroutine: Any = tracing.job(run_job)(object(), 3, JobSpec("n", "a", "{}"))  # type: ignore[arg-type]
    assert coroutine.cr_code is run_job.__code__
    assert await coroutine == 3
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}
