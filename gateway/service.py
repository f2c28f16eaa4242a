"""The gateway's request path below HTTP: model, tokenization, routing, retry, accounting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.engine_request import sampling_params
from scaleserve.gateway.errors import (
    REPLICA_FAILURES,
    RETRYABLE,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReplicaAvailableError,
    UpstreamError,
    from_rpc_error,
)
from scaleserve.gateway.limits import Admission
from scaleserve.gateway.metrics import GatewayMetrics
from scaleserve.gateway.pool import EOF, Replica, ReplicaPool
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.routing import RouteRequest, get_policy
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.gateway.stats import TimeWeightedGauge
from scaleserve.gateway.tokenizer import ModelTokenizer

log = logging.getLogger("scaleserve.gateway")
STATUS_WAIT_S = 2.0  # how long a finished call may take to deliver its status


@dataclass(frozen=True)
class Model:
    """The served model, learned from the first engine's ModelInfo."""

    name: str
    max_model_len: int
    vocab_size: int
    tokenizer: ModelTokenizer
    created: int


@dataclass(slots=True)
class Upstream:
    """An open Generate call that has produced its first message."""

    replica: Replica
    call: Any  # grpc.aio.UnaryStreamCall
    first: engine_pb2.GenerateResponse
    first_at: float
    complete: bool = False  # the last message (finish_reason) has arrived

    async def next(self) -> engine_pb2.GenerateResponse:
        """The call's next message; the stream ending before its last message is an error."""
        msg = await self.call.read()
        self.replica.outputs += 1  # proof of life for the replica's probe
        if msg is EOF:
            raise UpstreamError("the engine ended the stream before finishing")
        return msg  # type: ignore[no-any-return]


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.policy = get_policy(settings.routing)
        self.pool = ReplicaPool(
            settings.health_interval, settings.health_timeout, on_model_info=self._on_model_info
        )
        self.admission = Admission(
            settings.max_concurrency, settings.max_queue, settings.retry_after
        )
        self.in_flight = TimeWeightedGauge(settings.stats_window)
        self.requests_total = 0
        self.retries_total = 0
        self.model: Model | None = None
        self._seq = itertools.count()
        self._model_lock = asyncio.Lock()
        self.metrics = GatewayMetrics(self.stats)
        self._request_counters: dict[tuple[str, int], Any] = {}
        self._prompt_tokens = self.metrics.tokens.labels("prompt")
        self._completion_tokens = self.metrics.tokens.labels("completion")

    # -- observations (once per request, never per token) ----------------------------------

    def observe(self, route: str, status: int, arrived: float) -> None:
        counter = self._request_counters.get((route, status))
        if counter is None:
            counter = self.metrics.requests.labels(route, str(status))
            self._request_counters[(route, status)] = counter
        counter.inc()
        self.metrics.duration.observe(time.perf_counter() - arrived)

    def observe_ttft(self, seconds: float) -> None:
        self.metrics.ttft.observe(seconds)

    def observe_tokens(self, prompt: int, completion: int) -> None:
        self._prompt_tokens.inc(prompt)
        self._completion_tokens.inc(completion)

    def metrics_disconnect(self) -> None:
        self.metrics.disconnects.inc()

    async def _on_model_info(self, info: engine_pb2.ModelInfoResponse) -> None:
        async with self._model_lock:
            if self.model is not None:
                if info.served_model_name != self.model.name:
                    log.warning(
                        "replica serves %r, the gateway serves %r",
                        info.served_model_name,
                        self.model.name,
                    )
                return
            tokenizer = await asyncio.to_thread(
                ModelTokenizer.from_files, dict(info.tokenizer_files), info.chat_template
            )
            self.model = Model(
                name=info.served_model_name,
                max_model_len=info.max_model_len,
                vocab_size=info.vocab_size,
                tokenizer=tokenizer,
                created=int(time.time()),
            )
            log.info("serving model %r (max_model_len %d)", self.model.name, info.max_model_len)

    @property
    def ready(self) -> bool:
        return self.model is not None and self.pool.any_eligible()

    def require_model(self) -> Model:
        if self.model is None:
            raise NoReplicaAvailableError(
                "no engine replica is ready yet",
                headers={"retry-after": str(self.settings.retry_after)},
            )
        return self.model

    # -- request preparation ---------------------------------------------------------------

    def prepare(
        self, req: GenerationRequest, request_id: str
    ) -> tuple[list[int], engine_pb2.GenerateRequest]:
        """Check the model, tokenize, check lengths, and build the engine request."""
        model = self.require_model()
        if req.model != model.name:
            raise ModelNotFoundError(f"The model `{req.model}` does not exist.", param="model")
        tok = model.tokenizer
        if req.kind == "chat":
            ids = tok.encode_chat(
                req.messages,
                req.add_generation_prompt,
                req.continue_final_message,
                req.chat_template_kwargs,
            )
        elif isinstance(req.prompt, str):
            ids = tok.encode(req.prompt)
        else:
            ids = list(req.prompt)
            if model.vocab_size and max(ids) >= model.vocab_size:
                raise InvalidRequestError(
                    f"prompt token ids must be below the vocabulary size {model.vocab_size}",
                    param="prompt",
                    code="invalid_value",
                )
        s = req.sampling
        limit = model.max_model_len
        if limit:
            if len(ids) >= limit:
                raise InvalidRequestError(
                    f"This model's maximum context length is {limit} tokens. However, your prompt "
                    f"has {len(ids)} tokens, leaving no room for a completion.",
                    param="messages" if req.kind == "chat" else "prompt",
                    code="context_length_exceeded",
                )
            if s.max_tokens is not None and len(ids) + s.max_tokens > limit:
                raise InvalidRequestError(
                    f"This model's maximum context length is {limit} tokens. However, you "
                    f"requested {len(ids) + s.max_tokens} tokens ({len(ids)} in the prompt, "
                    f"{s.max_tokens} for the completion). Please reduce the prompt or max_tokens.",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
        sp = sampling_params(req, model.vocab_size)
        return ids, engine_pb2.GenerateRequest(
            request_id=request_id,
            prompt_token_ids=engine_pb2.TokenIds(ids=ids),
            sampling=sp,
        )

    # -- dispatch --------------------------------------------------------------------------

    async def open(self, prompt_ids: list[int], request: engine_pb2.GenerateRequest) -> Upstream:
        """Route and start a Generate call; one retry elsewhere if it fails before output."""
        exclude: frozenset[str] = frozenset()
        last: GatewayError | None = None
        for attempt in range(2):
            route = RouteRequest(next(self._seq), random.getrandbits(64), prompt_ids)
            choice = self.policy(self.pool.snapshot(exclude), route)
            replica = self.pool.get(choice.key) if choice is not None else None
            if replica is None:
                break
            if attempt:
                self.retries_total += 1
                self.metrics.retries.inc()
            self.pool.acquire(replica)
            call = replica.stub.Generate(request)
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                self.pool.release(replica)
                code = exc.code()
                if code in REPLICA_FAILURES:
                    self.pool.report_failure(replica, f"{code.name}: {exc.details()}")
                last = from_rpc_error(exc)
                if code not in RETRYABLE:
                    raise last from None
                exclude = exclude | {replica.address}
                continue
            except BaseException:
                call.cancel()
                self.pool.release(replica)
                raise
            if first is EOF:
                self.pool.release(replica)
                last = UpstreamError("the engine ended the stream without output")
                exclude = exclude | {replica.address}
                continue
            return Upstream(replica, call, first, time.perf_counter())
        if last is not None:
            raise last
        raise NoReplicaAvailableError(
            "no engine replica is available",
            headers={"retry-after": str(self.settings.retry_after)},
        )

    def upstream_failed(self, upstream: Upstream, exc: grpc.aio.AioRpcError) -> None:
        """A call failed after its first message: take an unreachable replica out at once."""
        if exc.code() in REPLICA_FAILURES:
            self.pool.report_failure(upstream.replica, f"{exc.code().name}: {exc.details()}")

    async def finish(self, upstream: Upstream) -> None:
        """End the call: a complete one is left to close with its status (an engine counts a
        cancelled call as aborted), anything else is cancelled, which aborts the engine request."""
        call = upstream.call
        try:
            if upstream.complete and not call.done():
                with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                    async with asyncio.timeout(STATUS_WAIT_S):
                        await call.code()
        finally:
            if not call.done():
                call.cancel()
            self.pool.release(upstream.replica)

    # -- the operator's signal -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight.value,
            "in_flight_avg": round(self.in_flight.mean(), 4),
            "window_s": self.settings.stats_window,
            "queued": self.admission.queued,
            "requests_total": self.requests_total,
            "replicas": [
                {
                    "address": r.address,
                    "tensor_parallel": r.weight,
                    "in_flight": r.in_flight,
                    "healthy": r.healthy,
                    "serving": self.pool.takes_work(r),
                    "terminating": r.terminating,
                }
                for r in self.pool.replicas
            ],
        }
