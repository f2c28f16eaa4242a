"""Tracing set-up from the OTEL_* environment, and a request's trace of sequential stages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scaleserve.gateway.app import create_app
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.tracing import Trace, carrier_of, enabled, tracer_from_env

pytestmark = pytest.mark.unit

OTEL = (
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def memory() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_off_by_default_installs_nothing(clean_env: pytest.MonkeyPatch) -> None:
    assert tracer_from_env("scaleserve-gateway") is None
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    assert tracer_from_env("scaleserve-gateway") is None
    # no global provider either way, and a gateway built without tracing traces nothing
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    app = create_app(GatewaySettings(replicas=("127.0.0.1:50051",)))
    assert app.tracer is None


def test_an_endpoint_turns_tracing_on_with_the_standard_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    tracing = tracer_from_env("scaleserve-engine")
    assert tracing is not None
    try:
        provider = tracing.provider
        assert provider.resource.attributes["service.name"] == "scaleserve-engine"
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
        (processor,) = provider._active_span_processor._span_processors
        assert isinstance(processor.span_exporter, HttpExporter)
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # never global
    finally:
        tracing.shutdown()
    clean_env.setenv("OTEL_SERVICE_NAME", "my-gateway")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    tracing = tracer_from_env("scaleserve-gateway")
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "my-gateway"
        (processor,) = tracing.provider._active_span_processor._span_processors
        assert isinstance(processor.span_exporter, GrpcExporter)
    finally:
        tracing.shutdown()


def test_stages_are_consecutive_children_and_the_context_propagates(
    memory: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = memory
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = [(b"content-type", b"application/json"), (b"traceparent", parent.encode())]
    request = Trace(tracer, "gateway.request", carrier_of(headers), {"k": "v"})
    request.stage("gateway.receive")
    request.stage("gateway.queue", error=TimeoutError("queue full"))
    injected = dict(request.headers())
    request.end()

    receive, queue, root = exporter.get_finished_spans()
    assert root.parent is not None
    assert root.parent.span_id == 0xB7AD6B7169203331
    assert root.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert receive.parent == root.context
    assert queue.parent == root.context
    assert receive.end_time == queue.start_time  # one mark: no gap, no overlap
    assert queue.status.status_code is trace.StatusCode.ERROR
    assert (
        injected["traceparent"] == f"00-{root.context.trace_id:032x}-{root.context.span_id:016x}-01"
    )
    # the engine's side: the traceparent in gRPC metadata makes the gateway's span the parent
    engine = Trace(tracer, "engine.request", carrier_of(injected.items()), {})
    engine.end()
    assert exporter.get_finished_spans()[-1].parent.span_id == root.context.span_id
