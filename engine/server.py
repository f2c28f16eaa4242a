"""The engine process: gRPC server and probes up first, then the model, then serve until SIGTERM.

Start-up: the gRPC port answers Health (NOT_SERVING) while vLLM loads the model in a worker
thread. SIGTERM: DRAINING, no new work, in-flight requests finish within the drain timeout
(the rest are aborted), then the process exits 0. If the engine core dies, Health says
NOT_SERVING, /healthz fails and every call gets UNAVAILABLE at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import grpc
import prometheus_client

from scaleserve.engine.cpu_bind import bind_cpu_workers
from scaleserve.engine.engine_args import build_engine_args
from scaleserve.engine.http_probe import ProbeServer
from scaleserve.engine.lifecycle import Phase, Runtime
from scaleserve.engine.metrics import EngineMetrics
from scaleserve.engine.model_info import model_facts
from scaleserve.engine.proto import engine_pb2_grpc
from scaleserve.engine.settings import EngineSettings
from scaleserve.tracing import tracer_from_env

log = logging.getLogger("scaleserve.engine")

GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a port already taken is an error, not a silent share
    ("grpc.max_send_message_length", -1),  # ModelInfo carries the tokenizer files
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_pings_without_data", 0),
]
WATCH_INTERVAL_S = 0.5
ABORT_GRACE_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def load_engine(settings: EngineSettings, runtime: Runtime) -> Any:
    """Build vLLM's AsyncLLM (blocking; runs in a worker thread while the loop serves Health)."""
    from vllm.v1.engine.async_llm import AsyncLLM

    args = build_engine_args(settings)
    bind_cpu_workers(settings.tensor_parallel_size)  # before vLLM starts its workers
    return AsyncLLM.from_engine_args(args, stat_loggers=[runtime.scheduler.logger_factory()])


async def serve(settings: EngineSettings) -> int:
    runtime = Runtime(settings.served_name, stall_timeout=settings.stall_timeout)
    registry = prometheus_client.REGISTRY  # vLLM's own vllm:* gauges are registered here
    metrics = EngineMetrics(registry)
    server, tracing = await _start_grpc(settings, runtime, metrics)
    probe = ProbeServer(runtime, registry)
    if settings.metrics_port:
        await probe.start(settings.host, settings.metrics_port)
    log.info("gRPC on %s:%d, loading %s", settings.host, settings.port, settings.model)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await _load(settings, runtime)
        except Exception as exc:
            log.exception("the model failed to load")
            runtime.phase, runtime.failure = Phase.FAILED, f"load failed: {exc}"
            return 1
        if stop.is_set():
            return 0
        await _serve_until(stop, settings, runtime, metrics)
        return 0
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await server.stop(grace=1.0)
        await probe.stop()
        if runtime.engine is not None:
            runtime.engine.shutdown()
        if tracing is not None:
            tracing.shutdown()  # exports the last spans


async def _start_grpc(
    settings: EngineSettings, runtime: Runtime, metrics: EngineMetrics
) -> tuple[grpc.aio.Server, Any]:
    """The gRPC server, answering (Health first) before the model loads; and the tracing
    set-up it reports to (None unless OTEL_* says so)."""
    from scaleserve.engine.service import EngineService  # imports vLLM

    tracing = tracer_from_env("scaleserve-engine")
    server = grpc.aio.server(options=GRPC_OPTIONS)
    service = EngineService(runtime, metrics, tracing.tracer if tracing is not None else None)
    engine_pb2_grpc.add_EngineServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    return server, tracing


async def _load(settings: EngineSettings, runtime: Runtime) -> None:
    """Load the model and what serving needs from it: its facts and its output parsers."""
    from scaleserve.engine.output_parsing import parser_class

    runtime.engine = await asyncio.to_thread(load_engine, settings, runtime)
    runtime.facts = model_facts(
        runtime.engine,
        settings.served_name,
        settings.tool_call_parser or "",
        settings.reasoning_parser or "",
        settings.task,
    )
    runtime.output_parser = parser_class(
        settings.tool_call_parser, settings.reasoning_parser, runtime.engine
    )
    # vLLM asks the core for its tasks on the first request and caches them: asked
    # here, no request waits on a core round trip before vLLM registers it (an Abort
    # or a core death in that wait would find nothing to abort or fail).
    await runtime.engine.get_supported_tasks()


async def _serve_until(
    stop: asyncio.Event, settings: EngineSettings, runtime: Runtime, metrics: EngineMetrics
) -> None:
    """Serve, watching the engine core, until a stop signal; then drain."""
    runtime.phase = Phase.SERVING
    metrics.serving.set(1)
    log.info("serving %s as %r", settings.model, settings.served_name)
    watcher = asyncio.create_task(_watch_engine(runtime, metrics), name="engine-watch")
    await stop.wait()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await drain(runtime, metrics, settings.drain_timeout)


async def drain(runtime: Runtime, metrics: EngineMetrics, drain_timeout_s: float) -> None:
    """No new work; let in-flight requests finish within the timeout, then abort the rest."""
    if runtime.phase is Phase.SERVING:
        runtime.phase = Phase.DRAINING
    metrics.serving.set(0)
    left = len(runtime.in_flight)
    log.info("draining %d in-flight request(s), up to %.0fs", left, drain_timeout_s)
    try:
        await asyncio.wait_for(runtime.idle.wait(), drain_timeout_s)
    except TimeoutError:
        unfinished = sorted(runtime.in_flight)
        log.warning("drain timeout: aborting %d request(s)", len(unfinished))
        if runtime.engine is not None and not runtime.engine_dead:
            await runtime.engine.abort(unfinished)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.idle.wait(), ABORT_GRACE_S)


async def _watch_engine(runtime: Runtime, metrics: EngineMetrics) -> None:
    """Notice a dead engine core: fail its open streams at once, flip health and metrics."""
    from vllm.v1.engine.exceptions import EngineDeadError

    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        if runtime.current_phase() is Phase.FAILED:
            log.error("the engine core died; every request now gets UNAVAILABLE")
            metrics.serving.set(0)
            runtime.engine.output_processor.propagate_error(EngineDeadError())
            return


def main(settings: EngineSettings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))
