"""OpenTelemetry tracing for the gateway and the engine: set-up from OTEL_* env, and one trace
per request made of sequential stages.

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and `OTEL_SDK_DISABLED` not true): then `tracer_from_env`
returns None, nothing installs a tracer provider, and the request paths, which only test
`trace is not None`, create no span and send no metadata. The provider is never made global:
the tracer is passed to the component that uses it.

The rest of the standard environment is the SDK's own: `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, the exporter's
`OTEL_EXPORTER_OTLP_*` (protocol `http/protobuf` unless `OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL`
says `grpc`) and `OTEL_PROPAGATORS` (W3C trace context and baggage by default).

A request's stages follow each other, so a `Trace` keeps one mark: `stage(name)` records the
span from the last mark to now, a child of the request's span. No span stays open while a
stage runs, and a stage that fails still gets its span (`failed`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger("scaleserve.tracing")

ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_ENV = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# Span attribute names shared by both sides.
REQUEST_ID = "scaleserve.request_id"
MODEL = "gen_ai.request.model"
PROMPT_TOKENS = "gen_ai.usage.input_tokens"
COMPLETION_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASON = "gen_ai.response.finish_reasons"
REPLICA = "scaleserve.replica"


def enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_ENV)


class Tracing:
    """A tracer and the provider to flush at shutdown."""

    def __init__(self, provider: Any, tracer: trace.Tracer) -> None:
        self.provider = provider
        self.tracer = tracer

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what the batch still holds


def tracer_from_env(service_name: str) -> Tracing | None:
    """A batch-exporting OTLP tracer when the process environment configures tracing, else
    None (and no import of the SDK, which reads the same environment). `service_name` applies
    unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names one."""
    env = os.environ
    if not enabled(env):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    protocol = next((env[n] for n in PROTOCOL_ENV if env.get(n)), "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing: OTLP (%s) export as %s", protocol, resource.attributes[SERVICE_NAME])
    return Tracing(provider, provider.get_tracer("scaleserve"))


class Trace:
    """One request's span and its sequential stages."""

    __slots__ = ("context", "mark", "span", "tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        carrier: Mapping[str, str],
        attributes: Mapping[str, Any],
        kind: SpanKind = SpanKind.SERVER,
    ) -> None:
        self.tracer = tracer
        parent = propagate.extract(carrier) if carrier else None
        self.mark = time.time_ns()
        self.span = tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=self.mark
        )
        self.context = trace.set_span_in_context(self.span)

    def stage(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """The span of the stage that ran from the last mark until now (and failed with
        `error`, if given)."""
        now = time.time_ns()
        span = self.tracer.start_span(
            name, context=self.context, attributes=attributes, start_time=self.mark
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=now)
        self.mark = now

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes(attributes)

    def fail(self, message: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, message))

    def headers(self) -> list[tuple[str, str]]:
        """traceparent (and tracestate, baggage) that make the request's span the parent."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=self.context)
        return list(carrier.items())

    def end(self) -> None:
        self.span.end()


def carrier_of(pairs: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    """The trace-context entries of HTTP headers (bytes) or gRPC metadata (str)."""
    fields = propagate.get_global_textmap().fields
    carrier = {}
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name in fields:
            carrier[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return carrier
