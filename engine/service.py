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
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineDeadError

from scaleserve.engine.errors import (
    CoreDeadError,
    DuplicateRequestError,
    EngineError,
    InvalidRequestError,
    NotReadyError,
    status_for,
)
from scaleserve.engine.lifecycle import Phase, Runtime
from scaleserve.engine.metrics import EngineMetrics
from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from scaleserve.engine.requests import Limits, PreparedRequest, prepare

log = logging.getLogger(__name__)

GenerateResponse = engine_pb2.GenerateResponse
Usage = engine_pb2.Usage


class EngineService(engine_pb2_grpc.EngineServicer):
    def __init__(self, runtime: Runtime, metrics: EngineMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._limits: Limits | None = None

    def _admit(self, request: engine_pb2.GenerateRequest) -> tuple[PreparedRequest, Any]:
        runtime = self.runtime
        phase = runtime.current_phase()
        if phase is Phase.FAILED:
            raise CoreDeadError(runtime.failure or "the engine core is not running")
        if phase is not Phase.SERVING:
            raise NotReadyError(f"the engine is {phase.value}; no new requests")
        if self._limits is None:
            facts = runtime.facts
            assert facts is not None
            self._limits = Limits(vocab_size=facts.vocab_size, max_model_len=facts.max_model_len)
        prepared = prepare(request, self._limits)
        if prepared.request_id in runtime.in_flight:
            raise DuplicateRequestError(prepared.request_id)
        try:
            params = SamplingParams(**prepared.sampling, output_kind=RequestOutputKind.DELTA)
        except VLLMValidationError as exc:
            raise InvalidRequestError(f"sampling.{exc.parameter or 'params'}", str(exc)) from exc
        return prepared, params

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[engine_pb2.GenerateResponse]:
        started = time.perf_counter()
        metrics = self.metrics
        try:
            prepared, params = self._admit(request)
        except EngineError as exc:
            invalid = isinstance(exc, InvalidRequestError)
            metrics.requests.labels("invalid" if invalid else "refused").inc()
            await context.abort(exc.code, str(exc))
        request_id = prepared.request_id or uuid.uuid4().hex
        runtime = self.runtime
        runtime.start(request_id)
        metrics.in_flight.inc()
        outcome = "cancelled"
        tokens = messages = 0
        error: EngineError | None = None
        want_logprobs = params.logprobs is not None
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
            stream = engine.generate(engine_input, params, request_id)
            async for out in stream:
                runtime.progress()
                completion = out.outputs[0]
                new_ids = completion.token_ids
                if tokens == 0 and new_ids:
                    metrics.ttft.observe(time.perf_counter() - started)
                tokens += len(new_ids)
                messages += 1
                if not out.finished:
                    if want_logprobs:
                        yield GenerateResponse(
                            text=completion.text,
                            token_ids=new_ids,
                            logprobs=_logprobs(completion, params.logprobs),
                        )
                    else:
                        yield GenerateResponse(text=completion.text, token_ids=new_ids)
                    continue
                outcome = completion.finish_reason or "stop"
                top = params.logprobs if want_logprobs else None
                yield _last_message(out, completion, tokens, prepared.prompt_len, top)
                break
        except EngineDeadError:
            outcome, error = "unavailable", CoreDeadError("the engine core process died")
        except VLLMValidationError as exc:
            outcome, error = "invalid", InvalidRequestError(_field_of(exc, prepared), str(exc))
        except Exception as exc:
            if runtime.engine_dead:
                outcome, error = "unavailable", CoreDeadError("the engine core process died")
            else:
                log.exception(
                    "request %s (x-request-id %s) failed", request_id, _client_request_id(context)
                )
                outcome, error = "error", EngineError(f"{type(exc).__name__}: {exc}")
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
        if error is not None:
            code, details = status_for(error)
            await context.abort(code, details)

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


PROMPT_PARAMETERS = {None, "", "prompt", "input_tokens", "prompt_token_ids"}


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


def _last_message(
    out: Any, completion: Any, tokens: int, prompt_len: int | None, top: int | None
) -> Any:
    prompt_tokens = prompt_len if prompt_len is not None else len(out.prompt_token_ids or ())
    stop_reason = completion.stop_reason
    return GenerateResponse(
        text=completion.text,
        token_ids=completion.token_ids,
        finish_reason=completion.finish_reason or "stop",
        stop_reason="" if stop_reason is None else str(stop_reason),
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=tokens,
            cached_prompt_tokens=out.num_cached_tokens or 0,
        ),
        logprobs=_logprobs(completion, top) if top is not None else None,
    )


def _logprobs(completion: Any, top: int) -> list[engine_pb2.TokenLogprob]:
    """One TokenLogprob per new token: the sampled token's logprob and the `top` best."""
    result = []
    for token_id, entries in zip(completion.token_ids, completion.logprobs or (), strict=False):
        sampled = entries.get(token_id)
        best = sorted(
            (e for e in entries.items() if e[1].rank is not None and e[1].rank <= top),
            key=lambda e: e[1].rank,
        )
        result.append(
            engine_pb2.TokenLogprob(
                token_id=token_id,
                token=(sampled.decoded_token or "") if sampled else "",
                logprob=sampled.logprob if sampled else 0.0,
                top=[
                    engine_pb2.TopLogprob(
                        token_id=tid, token=lp.decoded_token or "", logprob=lp.logprob
                    )
                    for tid, lp in best
                ],
            )
        )
    return result
