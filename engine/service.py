"""The gRPC service `scaleserve.engine.v1.Engine` over vLLM's AsyncLLM, hosted in-process.

Streaming: requests use vLLM's DELTA output kind, whose per-request collector merges new
outputs while the previous one has not been taken yet. When the client (or the HTTP/2 flow
control window) falls behind, `yield` blocks and the next message carries every token that
arrived meanwhile: coalescing costs nothing on the fast path. Per-token work is one protobuf
message per engine step.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.exceptions import EngineDeadError

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
from scaleserve.engine.lifecycle import Phase, Runtime
from scaleserve.engine.metrics import EngineMetrics
from scaleserve.engine.output_parsing import OutputParsing
from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from scaleserve.engine.requests import Limits, PreparedRequest, prepare
from scaleserve.tracing import (
    COMPLETION_TOKENS,
    FINISH_REASON,
    MODEL,
    PROMPT_TOKENS,
    REQUEST_ID,
    Trace,
    carrier_of,
)

log = logging.getLogger(__name__)

GenerateResponse = engine_pb2.GenerateResponse
Usage = engine_pb2.Usage


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
        runtime = self.runtime
        prepared = prepare(request, self._serving("generate"))
        if prepared.request_id in runtime.in_flight:
            raise DuplicateRequestError(prepared.request_id)
        kwargs = prepared.sampling
        if "structured_outputs" in kwargs:
            kwargs = {
                **kwargs,
                "structured_outputs": StructuredOutputsParams(**kwargs["structured_outputs"]),
            }
        parsing = self._output_parsing(request)
        if parsing is not None:
            kwargs = {**kwargs, **parsing.sampling_overrides()}
        try:
            params = SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)
        except VLLMValidationError as exc:
            raise InvalidRequestError(f"sampling.{exc.parameter or 'params'}", str(exc)) from exc
        return prepared, params, parsing

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[engine_pb2.GenerateResponse]:
        started = time.perf_counter()
        metrics = self.metrics
        trace = self._trace(context) if self.tracer is not None else None
        try:
            prepared, params, parsing = self._admit(request)
        except EngineError as exc:
            invalid = isinstance(exc, InvalidRequestError)
            metrics.requests.labels("invalid" if invalid else "refused").inc()
            if trace is not None:
                trace.stage("engine.admission", error=exc)
                trace.fail(str(exc))
                trace.end()
            await context.abort(exc.code, str(exc))
        if trace is not None:
            trace.stage("engine.admission")
        request_id = prepared.request_id or uuid.uuid4().hex
        runtime = self.runtime
        runtime.start(request_id)
        metrics.in_flight.inc()
        outcome = "cancelled"
        tokens = messages = 0
        error: EngineError | None = None
        engine_input: Any = None
        try:
            engine = runtime.engine
            if prepared.prompt_len is not None:  # token ids: no tokenization, no thread hop
                (engine_input,) = engine.renderer.render_cmpl([prepared.prompt])
            else:
                (engine_input,) = await engine.renderer.render_cmpl_async([prepared.prompt])
            if request_id in runtime.abort_requested:  # aborted while its text was tokenized
                outcome = "abort"
                prompt_tokens = len(engine_input["prompt_token_ids"])
                yield GenerateResponse(
                    finish_reason="abort", usage=Usage(prompt_tokens=prompt_tokens)
                )
                return
            # vLLM registers the request before generate() first suspends, so from here on an
            # Abort reaches it through engine.abort.
            extra = {}
            if parsing is not None:
                extra = parsing.generate_kwargs(list(engine_input["prompt_token_ids"]))
            stream = engine.generate(engine_input, params, request_id, **extra)
            relay = _Relay(params, prepared.prompt_len, parsing)
            async for out in stream:
                runtime.progress()
                if tokens == 0 and any(c.token_ids for c in out.outputs):
                    metrics.ttft.observe(time.perf_counter() - started)
                for message in relay.messages(out):
                    tokens += len(message.token_ids)
                    messages += 1
                    yield message
                if relay.done:
                    break
            outcome = relay.outcome  # an abort may end a stream before all n choices finish
        except Exception as exc:
            outcome, error = _failure(
                runtime,
                exc,
                _field_of(exc, prepared) if isinstance(exc, VLLMValidationError) else "",
                f"request {request_id} (x-request-id {_client_request_id(context)})",
            )
        finally:
            runtime.finish(request_id)
            runtime.counters.generated_tokens_total += tokens
            if outcome in ("abort", "cancelled"):
                runtime.counters.aborted_total += 1
            metrics.in_flight.dec()
            metrics.requests.labels(outcome).inc()
            metrics.generated_tokens.inc(tokens)
            metrics.stream_messages.inc(messages)
            metrics.duration.observe(time.perf_counter() - started)
            if trace is not None:
                _end_trace(trace, request_id, engine_input, tokens, outcome, error)
        if error is not None:
            code, details = status_for(error)
            await context.abort(code, details)

    async def Embed(  # noqa: N802
        self, request: engine_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.EmbedResponse:
        started = time.perf_counter()
        metrics, runtime = self.metrics, self.runtime
        try:
            prepared: PreparedEmbed = prepare_embed(request, self._serving("embed"))
            if prepared.request_id in runtime.in_flight:
                raise DuplicateRequestError(prepared.request_id)
        except EngineError as exc:
            invalid = isinstance(exc, InvalidRequestError)
            metrics.requests.labels("invalid" if invalid else "refused").inc()
            await context.abort(exc.code, str(exc))
        request_id = prepared.request_id or uuid.uuid4().hex
        runtime.start(request_id)  # a drain waits for it like for a Generate call
        metrics.in_flight.inc()
        outcome = "cancelled"
        error: EngineError | None = None
        response = engine_pb2.EmbedResponse()
        try:
            response = await embed(runtime, prepared, request_id)
            outcome = "embedded"
        except Exception as exc:
            outcome, error = _failure(
                runtime,
                exc,
                _embed_field(exc, prepared) if isinstance(exc, VLLMValidationError) else "",
                f"embed request {request_id}",
            )
        finally:
            runtime.finish(request_id)
            metrics.in_flight.dec()
            metrics.requests.labels(outcome).inc()
            metrics.duration.observe(time.perf_counter() - started)
        if error is not None:
            code, details = status_for(error)
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


def _end_trace(
    trace: Trace,
    request_id: str,
    engine_input: Any,
    tokens: int,
    outcome: str,
    error: EngineError | None,
) -> None:
    prompt_tokens = len(engine_input["prompt_token_ids"]) if engine_input is not None else 0
    trace.stage("engine.vllm_generate", error=error)
    trace.annotate(
        {
            "gen_ai.response.id": request_id,
            PROMPT_TOKENS: prompt_tokens,
            COMPLETION_TOKENS: tokens,
            FINISH_REASON: outcome,
        }
    )
    if error is not None:
        trace.fail(str(error))
    trace.end()


PROMPT_PARAMETERS = {None, "", "prompt", "input_tokens", "prompt_token_ids"}


def _failure(runtime: Runtime, exc: Exception, field: str, what: str) -> tuple[str, EngineError]:
    """The outcome label and the error of a call that raised `exc` (`field`: the request field
    a VLLMValidationError names); an unexpected exception while the core is dead is UNAVAILABLE."""
    if isinstance(exc, EngineDeadError):
        return "unavailable", CoreDeadError("the engine core process died")
    if isinstance(exc, VLLMValidationError):
        return "invalid", InvalidRequestError(field, str(exc))
    if runtime.engine_dead:
        return "unavailable", CoreDeadError("the engine core process died")
    log.exception("%s failed", what)
    return "error", EngineError(f"{type(exc).__name__}: {exc}")


def _client_request_id(context: Any) -> str:
    """The gateway's x-request-id (gRPC metadata), for logs that a client's report can find."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return "-"


def _field_of(exc: VLLMValidationError, prepared: PreparedRequest) -> str:
    """The protocol field a vLLM validation error is about."""
    if exc.parameter in PROMPT_PARAMETERS:
        return "prompt_text" if prepared.prompt_len is None else "prompt_token_ids"
    return f"sampling.{exc.parameter}"


def _embed_field(exc: VLLMValidationError, prepared: PreparedEmbed) -> str:
    """The Embed field a vLLM validation error is about (vLLM names no parameter for its
    matryoshka checks, the only pooling parameter a request sets)."""
    if not exc.parameter and prepared.dimensions is not None:
        return "dimensions"
    if exc.parameter in PROMPT_PARAMETERS:
        return "inputs"
    return str(exc.parameter)


class _Relay:
    """vLLM's outputs for one request -> protocol messages, one per choice that moved.

    A choice's last message carries its finish_reason; the last choice to finish also carries
    the request's usage, so a reader knows the stream is complete after n finishes.
    """

    def __init__(self, params: Any, prompt_len: int | None, parsing: OutputParsing | None) -> None:
        self.parsing = parsing
        self.n: int = params.n
        self.top = params.logprobs
        self.prompt_top = params.prompt_logprobs
        self.prompt_len = prompt_len
        self.finished = 0
        self.tokens = 0
        self.outcome = "cancelled"
        self.first = True

    @property
    def done(self) -> bool:
        return self.finished >= self.n

    def messages(self, out: Any) -> list[Any]:
        result = []
        for completion in out.outputs:
            self.tokens += len(completion.token_ids)
            message = GenerateResponse(
                text=completion.text, token_ids=completion.token_ids, index=completion.index
            )
            if self.top is not None:
                message.logprobs.extend(_logprobs(completion.token_ids, completion.logprobs))
            if self.first and self.prompt_top is not None and out.prompt_logprobs:
                ids = out.prompt_token_ids[1:]
                message.prompt_logprobs.extend(_logprobs(ids, out.prompt_logprobs[1:]))
            self.first = False
            if completion.finish_reason is not None:
                self._finish(message, out, completion)
            if self.parsing is not None:
                self.parsing.apply(message, out.prompt_token_ids, completion.finish_reason)
            result.append(message)
        return result

    def _finish(self, message: Any, out: Any, completion: Any) -> None:
        self.finished += 1
        message.finish_reason = completion.finish_reason
        if completion.stop_reason is not None:
            message.stop_reason = str(completion.stop_reason)
        if self.outcome == "cancelled" or completion.finish_reason == "abort":
            self.outcome = completion.finish_reason
        if self.done:
            prompt_tokens = self.prompt_len
            if prompt_tokens is None:
                prompt_tokens = len(out.prompt_token_ids or ())
            message.usage.CopyFrom(
                Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=self.tokens,
                    cached_prompt_tokens=out.num_cached_tokens or 0,
                )
            )


def _logprobs(token_ids: Any, steps: Any) -> list[engine_pb2.TokenLogprob]:
    """One TokenLogprob per token: its logprob and vLLM's candidates in vLLM's order (the
    sampled token first, then the best by rank), which the OpenAI formats slice."""
    result = []
    for token_id, entries in zip(token_ids, steps or (), strict=False):
        sampled = entries.get(token_id) if entries else None
        result.append(
            engine_pb2.TokenLogprob(
                token_id=token_id,
                token=(sampled.decoded_token or "") if sampled else "",
                logprob=sampled.logprob if sampled else 0.0,
                top=[
                    engine_pb2.TopLogprob(
                        token_id=tid, token=lp.decoded_token or "", logprob=lp.logprob
                    )
                    for tid, lp in (entries or {}).items()
                ],
            )
        )
    return result
