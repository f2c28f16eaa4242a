"""The gRPC service `scaleserve.engine.v1.Engine` over vLLM's AsyncLLM, hosted in-process.

Streaming: requests use vLLM's DELTA output kind, whose per-request collector merges new
outputs while the previous one has not been taken yet. When the client (or the HTTP/2 flow
control window) falls behind, `yield` blocks and the next message carries every token that
arrived meanwhile: coalescing costs nothing on the fast path. Per-token work is one protobuf
message per engine step (`relay.py`); request translation is in `vllm_inputs.py`, the mapping
of failures to outcomes and status codes in `failures.py`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from scaleserve.engine.embed_requests import PreparedEmbed, prepare_embed
from scaleserve.engine.embedding import embed
from scaleserve.engine.errors import (
    CoreDeadError,
    DuplicateRequestError,
    EngineError,
    InvalidRequestError,
    NotReadyError,
    WrongTaskError,
    status_for,
)
from scaleserve.engine.failures import embed_failure, generate_failure
from scaleserve.engine.lifecycle import Phase, Runtime
from scaleserve.engine.metrics import EngineMetrics
from scaleserve.engine.output_parsing import OutputParsing
from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from scaleserve.engine.relay import Relay
from scaleserve.engine.requests import Limits, PreparedRequest, prepare
from scaleserve.engine.vllm_inputs import generate_kwargs, render, sampling_params
from scaleserve.tracing import (
    COMPLETION_TOKENS,
    FINISH_REASON,
    MODEL,
    PROMPT_TOKENS,
    REQUEST_ID,
    Trace,
    carrier_of,
)

GenerateResponse = engine_pb2.GenerateResponse
Usage = engine_pb2.Usage


@dataclass
class _Call:
    """One admitted Generate or Embed call, from its start to its metrics."""

    request_id: str
    started: float
    outcome: str = "cancelled"  # until the call ends some other way
    error: EngineError | None = None
    tokens: int = 0
    messages: int = 0
    engine_input: Any = None  # Generate: the rendered prompt, once rendered


class EngineService(engine_pb2_grpc.EngineServicer):
    def __init__(self, runtime: Runtime, metrics: EngineMetrics, tracer: Any = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.tracer = tracer  # an OpenTelemetry tracer when tracing is on (scaleserve.tracing)
        self._limits: Limits | None = None

    def _trace(self, context: Any) -> Trace:
        """The request's span, a child of the caller's (the traceparent in the metadata)."""
        metadata = context.invocation_metadata() or ()
        attributes = {REQUEST_ID: _client_request_id(context), MODEL: self.runtime.served_name}
        return Trace(self.tracer, "engine.request", carrier_of(metadata), attributes)

    def _output_parsing(self, request: engine_pb2.GenerateRequest) -> OutputParsing | None:
        tools = request.tool_calling if request.HasField("tool_calling") else None
        reasoning = request.reasoning if request.HasField("reasoning") else None
        if tools is None and reasoning is None:
            return None
        parser_cls = self.runtime.output_parser
        if tools is not None and (parser_cls is None or parser_cls.tool_parser_cls is None):
            raise InvalidRequestError(
                "tool_calling", "this engine has no tool parser (--tool-call-parser)"
            )
        if reasoning is not None and (
            parser_cls is None or parser_cls.reasoning_parser_cls is None
        ):
            raise InvalidRequestError(
                "reasoning", "this engine has no reasoning parser (--reasoning-parser)"
            )
        tokenizer = self.runtime.engine.get_tokenizer()
        return OutputParsing(parser_cls, tokenizer, tools, reasoning)

    def _serving(self, task: str) -> Limits:
        """The model's limits when the engine takes new `task` calls; else why not."""
        runtime = self.runtime
        phase = runtime.current_phase()
        if phase is Phase.FAILED:
            raise CoreDeadError(runtime.failure or "the engine core is not running")
        if phase is not Phase.SERVING:
            raise NotReadyError(f"the engine is {phase.value}; no new requests")
        facts = runtime.facts
        assert facts is not None
        if facts.task != task:
            raise WrongTaskError(f"this engine's task is {facts.task!r}, not {task!r}")
        if self._limits is None:
            self._limits = Limits(vocab_size=facts.vocab_size, max_model_len=facts.max_model_len)
        return self._limits

    def _admit(
        self, request: engine_pb2.GenerateRequest
    ) -> tuple[PreparedRequest, Any, OutputParsing | None]:
        prepared = prepare(request, self._serving("generate"))
        if prepared.request_id in self.runtime.in_flight:
            raise DuplicateRequestError(prepared.request_id)
        parsing = self._output_parsing(request)
        return prepared, sampling_params(prepared, parsing), parsing

    async def _refuse(
        self,
        exc: EngineError,
        context: grpc.aio.ServicerContext[Any, Any],
        trace: Trace | None = None,
    ) -> NoReturn:
        """End a call that was not admitted with the error's status code."""
        invalid = isinstance(exc, InvalidRequestError)
        self.metrics.requests.labels("invalid" if invalid else "refused").inc()
        if trace is not None:
            trace.stage("engine.admission", error=exc)
            trace.fail(str(exc))
            trace.end()
        await context.abort(exc.code, str(exc))

    def _begin(self, request_id: str, started: float) -> _Call:
        self.runtime.start(request_id)  # a drain waits for it
        self.metrics.in_flight.inc()
        return _Call(request_id, started)

    def _end(self, call: _Call) -> None:
        self.runtime.finish(call.request_id)
        self.metrics.in_flight.dec()
        self.metrics.requests.labels(call.outcome).inc()
        self.metrics.duration.observe(time.perf_counter() - call.started)

    def _end_generate(self, call: _Call, trace: Trace | None) -> None:
        counters, metrics = self.runtime.counters, self.metrics
        counters.generated_tokens_total += call.tokens
        if call.outcome in ("abort", "cancelled"):
            counters.aborted_total += 1
        metrics.generated_tokens.inc(call.tokens)
        metrics.stream_messages.inc(call.messages)
        self._end(call)
        if trace is not None:
            _end_trace(trace, call)

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[engine_pb2.GenerateResponse]:
        started = time.perf_counter()
        trace = self._trace(context) if self.tracer is not None else None
        try:
            prepared, params, parsing = self._admit(request)
        except EngineError as exc:
            await self._refuse(exc, context, trace)
        if trace is not None:
            trace.stage("engine.admission")
        runtime = self.runtime
        call = self._begin(prepared.request_id or uuid.uuid4().hex, started)
        try:
            engine = runtime.engine
            call.engine_input = await render(engine, prepared)
            if call.request_id in runtime.abort_requested:  # aborted while its text was tokenized
                call.outcome = "abort"
                prompt_tokens = len(call.engine_input["prompt_token_ids"])
                yield GenerateResponse(
                    finish_reason="abort", usage=Usage(prompt_tokens=prompt_tokens)
                )
                return
            # vLLM registers the request before generate() first suspends, so from here on an
            # Abort reaches it through engine.abort.
            extra = generate_kwargs(parsing, call.engine_input)
            stream = engine.generate(call.engine_input, params, call.request_id, **extra)
            relay = Relay(params, prepared.prompt_len, parsing)
            async for out in stream:
                runtime.progress()
                if call.tokens == 0 and any(c.token_ids for c in out.outputs):
                    self.metrics.ttft.observe(time.perf_counter() - started)
                for message in relay.messages(out):
                    call.tokens += len(message.token_ids)
                    call.messages += 1
                    yield message
                if relay.done:
                    break
            call.outcome = relay.outcome  # an abort may end a stream before all n choices finish
        except Exception as exc:
            what = f"request {call.request_id} (x-request-id {_client_request_id(context)})"
            call.outcome, call.error = generate_failure(runtime, exc, prepared, what)
        finally:
            self._end_generate(call, trace)
        if call.error is not None:
            code, details = status_for(call.error)
            await context.abort(code, details)

    async def Embed(  # noqa: N802
        self, request: engine_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.EmbedResponse:
        started = time.perf_counter()
        runtime = self.runtime
        try:
            prepared: PreparedEmbed = prepare_embed(request, self._serving("embed"))
            if prepared.request_id in runtime.in_flight:
                raise DuplicateRequestError(prepared.request_id)
        except EngineError as exc:
            await self._refuse(exc, context)
        call = self._begin(prepared.request_id or uuid.uuid4().hex, started)
        response = engine_pb2.EmbedResponse()
        try:
            response = await embed(runtime, prepared, call.request_id)
            call.outcome = "embedded"
        except Exception as exc:
            what = f"embed request {call.request_id}"
            call.outcome, call.error = embed_failure(runtime, exc, prepared, what)
        finally:
            self._end(call)
        if call.error is not None:
            code, details = status_for(call.error)
            await context.abort(code, details)
        return response

    async def Abort(  # noqa: N802
        self, request: engine_pb2.AbortRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.AbortResponse:
        runtime = self.runtime
        if not runtime.request_abort(request.request_id) or runtime.engine is None:
            return engine_pb2.AbortResponse(found=False)
        await runtime.engine.abort(request.request_id)
        return engine_pb2.AbortResponse(found=True)

    async def Health(  # noqa: N802
        self, request: engine_pb2.HealthRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.HealthResponse:
        return self.runtime.health()

    async def Stats(  # noqa: N802
        self, request: engine_pb2.StatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.StatsResponse:
        return self.runtime.stats()

    async def ModelInfo(  # noqa: N802
        self, request: engine_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.ModelInfoResponse:
        facts = self.runtime.facts
        if facts is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return facts.to_proto()


def _end_trace(trace: Trace, call: _Call) -> None:
    engine_input = call.engine_input
    prompt_tokens = len(engine_input["prompt_token_ids"]) if engine_input is not None else 0
    trace.stage("engine.vllm_generate", error=call.error)
    trace.annotate(
        {
            "gen_ai.response.id": call.request_id,
            PROMPT_TOKENS: prompt_tokens,
            COMPLETION_TOKENS: call.tokens,
            FINISH_REASON: call.outcome,
        }
    )
    if call.error is not None:
        trace.fail(str(call.error))
    trace.end()


def _client_request_id(context: Any) -> str:
    """The gateway's x-request-id (gRPC metadata), for logs that a client's report can find."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return "-"
