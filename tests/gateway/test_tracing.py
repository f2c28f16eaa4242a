"""One streamed request, traced end to end: the gateway's spans (in-process gateway, in-memory
exporter) and the engine's (a real engine process exporting OTLP/HTTP to a receiver here) form
one trace joined by the traceparent the gateway sends in the gRPC metadata."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scaleserve.gateway.app import create_app
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.tracing import COMPLETION_TOKENS, PROMPT_TOKENS, REQUEST_ID, Tracing
from tests.fixtures.engines import EngineLauncher, EngineProcess, free_port
from tests.gateway.conftest import MODEL

pytestmark = pytest.mark.gateway

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
DEADLINE_S = 60.0


class OTLPReceiver:
    """The OTLP/HTTP traces endpoint of a collector, keeping the spans it receives."""

    def __init__(self) -> None:
        self.spans: list[Any] = []  # opentelemetry.proto.trace.v1.Span

    async def export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")


@contextlib.asynccontextmanager
async def otlp_receiver(port: int) -> AsyncIterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def traced_gateway(address: str, tracing: Tracing) -> AsyncIterator[str]:
    """The gateway app on uvicorn in this process; yields its base URL once it is ready."""
    port = free_port()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=port,
        internal_port=free_port(),
        replicas=(address,),
        health_interval=0.25,
        health_timeout=10,
    )
    app = create_app(settings, tracing)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="traced-gateway")
    try:
        await until(lambda: server.started and app.gateway.ready, "gateway ready")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


async def until(holds: Callable[[], Any], what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not (result := holds()):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {DEADLINE_S}s"
        await asyncio.sleep(0.05)
    return result


def attribute(span: Any, key: str) -> Any:
    for kv in span.attributes:
        if kv.key == key:
            return getattr(kv.value, kv.value.WhichOneof("value"))
    return None


async def traced_request(
    engine: EngineProcess, exporter: InMemorySpanExporter, tracing: Tracing, port: int
) -> tuple[Any, Any, dict[str, Any]]:
    """One streamed completion through a traced gateway: the gateway's request span, the
    usage the client got, and the engine's spans by name."""
    async with otlp_receiver(port) as receiver:
        await asyncio.to_thread(engine.wait_serving)
        async with traced_gateway(engine.address, tracing) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
            async with client:
                stream = await client.completions.create(
                    model=MODEL,
                    prompt="A journey of a thousand miles",
                    max_tokens=8,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers={
                        "x-request-id": "trace-me-1",
                        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                    },
                )
                chunks = [chunk async for chunk in stream]
            (root,) = await until(
                lambda: [s for s in exporter.get_finished_spans() if s.name == "gateway.request"],
                "the gateway's request span",
            )
        engine_spans = await until(
            lambda: {s.name: s for s in receiver.spans} if len(receiver.spans) >= 3 else None,
            "the engine's spans",
        )
    return root, chunks[-1].usage, engine_spans


@pytest.mark.asyncio
async def test_one_streamed_request_is_one_trace_across_gateway_and_engine(
    engine_launcher: EngineLauncher, tiny_model_dir: Path
) -> None:
    receiver_port = free_port()
    engine = engine_launcher.start(
        tiny_model_dir,
        name="traced",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the request
        },
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, provider.get_tracer("test"))
    try:
        root, usage, engine_spans = await traced_request(engine, exporter, tracing, receiver_port)
    finally:
        provider.shutdown()
        await asyncio.to_thread(engine.stop)  # this test's own engine: its cores back

    # the gateway: the client's trace, the request id, the token counts, one span per stage
    assert usage is not None
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert root.attributes[REQUEST_ID] == "trace-me-1"
    assert root.attributes[PROMPT_TOKENS] == usage.prompt_tokens
    assert root.attributes[COMPLETION_TOKENS] == usage.completion_tokens
    assert root.attributes["scaleserve.replica"] == engine.address
    stages = [s.name for s in exporter.get_finished_spans() if s.parent == root.context]
    assert stages == [
        "gateway.receive",
        "gateway.queue",
        "gateway.parse",
        "gateway.tokenize",
        "gateway.route",
        "gateway.first_token",
        "gateway.stream",
    ]

    # the engine: a child of the gateway's request span, in the same trace
    request = engine_spans["engine.request"]
    assert request.trace_id.hex() == CLIENT_TRACE
    assert request.parent_span_id == root.context.span_id.to_bytes(8, "big")
    assert attribute(request, REQUEST_ID) == "trace-me-1"
    assert attribute(request, PROMPT_TOKENS) == usage.prompt_tokens
    assert attribute(request, COMPLETION_TOKENS) == usage.completion_tokens
    for stage in ("engine.admission", "engine.vllm_generate"):
        assert engine_spans[stage].parent_span_id == request.span_id
