"""The gateway's request path below HTTP: model, tokenization, routing, retry, accounting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import grpc

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.deadlines import CURRENT_FLOW, Sweeper, current_trace
from scaleserve.gateway.engine_request import sampling_params
from scaleserve.gateway.errors import (
    REPLICA_FAILURES,
    RETRYABLE,
    EngineTimeoutError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReplicaAvailableError,
    NotImplementedByEngineError,
    ShuttingDownError,
    UpstreamError,
    from_rpc_error,
)
from scaleserve.gateway.holding import Holding
from scaleserve.gateway.limits import Admission
from scaleserve.gateway.metrics import GatewayMetrics
from scaleserve.gateway.models import Model, model_key
from scaleserve.gateway.pool import EOF, Replica, ReplicaPool
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.routing import RouteRequest, get_policy
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.gateway.stats import LatencyWindow, TimeWeightedGauge
from scaleserve.gateway.tokenizer import ModelTokenizer
from scaleserve.gateway.tools import require_parser
from scaleserve.tracing import COMPLETION_TOKENS, FINISH_REASON, PROMPT_TOKENS, REPLICA, Trace

log = logging.getLogger("scaleserve.gateway")
STATUS_WAIT_S = 2.0  # how long a finished call may take to deliver its status


@dataclass(slots=True)
class Upstream:
    """An open Generate call that has produced its first message."""

    replica: Replica
    call: Any  # grpc.aio.UnaryStreamCall
    first: engine_pb2.GenerateResponse
    first_at: float
    tensor_parallel: int  # the replica's degree when the call started (the latency report's)
    complete: bool = False  # the last message (finish_reason) has arrived
    reads: int = 0  # messages read after the first (the idle deadline's progress)

    async def next(self) -> engine_pb2.GenerateResponse:
        """The call's next message; the stream ending before its last message is an error."""
        msg = await self.call.read()
        self.reads += 1
        self.replica.outputs += 1  # proof of life for the replica's probe
        if msg is EOF:
            raise UpstreamError("the engine ended the stream before finishing")
        return msg  # type: ignore[no-any-return]


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.policy = get_policy(settings.routing)
        self.holding = Holding(settings.max_held, settings.hold_timeout, settings.retry_after)
        self.pool = ReplicaPool(
            settings.health_interval,
            settings.health_timeout,
            on_model_info=self._on_model_info,
            on_eligible=self.holding.wake,
        )
        self.admission = Admission(
            settings.max_concurrency,
            settings.max_queue,
            settings.retry_after,
            settings.queue_timeout,
        )
        self.sweeper = Sweeper(
            settings.token_idle_timeout,
            settings.write_timeout,
            lambda replica: self.pool.report_stall(replica, "no message within the idle timeout"),
        )
        self.in_flight = TimeWeightedGauge(settings.stats_window)
        self.latency = LatencyWindow(settings.stats_window)
        self.requests_total = 0
        self.retries_total = 0
        self.models: dict[Hashable, Model] = {}
        self.draining = False  # SIGTERM: no new requests, /readyz fails
        self.started = int(time.time())  # `created` of a configured model not seen yet
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
        trace = current_trace()
        if trace is not None:
            trace.annotate({"http.response.status_code": status})
            if status >= 500:
                trace.fail(f"HTTP {status}")

    def observe_ttft(self, seconds: float) -> None:
        self.metrics.ttft.observe(seconds)

    def observe_tokens(self, prompt: int, completion: int, finish_reason: str) -> None:
        self._prompt_tokens.inc(prompt)
        self._completion_tokens.inc(completion)
        trace = current_trace()
        if trace is not None:
            trace.annotate(
                {PROMPT_TOKENS: prompt, COMPLETION_TOKENS: completion, FINISH_REASON: finish_reason}
            )

    def observe_latency(self, upstream: Upstream, arrived: float, tokens: int) -> None:
        """A request that ended with its last token: its time to first token and its mean time
        between tokens (`tokens` per choice) go to the latency report of its replica's degree."""
        now = time.perf_counter()
        ttft_ms = (upstream.first_at - arrived) * 1000.0
        tbt_ms = (now - upstream.first_at) * 1000.0 / (tokens - 1) if tokens > 1 else None
        self.latency.record(upstream.tensor_parallel, ttft_ms, tbt_ms)

    def metrics_disconnect(self) -> None:
        self.metrics.disconnects.inc()

    async def _on_model_info(self, info: engine_pb2.ModelInfoResponse) -> Hashable:
        key = model_key(info)
        async with self._model_lock:
            if key in self.models:
                return key
            tokenizer = await asyncio.to_thread(
                ModelTokenizer.from_files, dict(info.tokenizer_files), info.chat_template
            )
            self.models[key] = Model(
                key=key,
                name=info.served_model_name,
                max_model_len=info.max_model_len,
                vocab_size=info.vocab_size,
                tokenizer=tokenizer,
                created=int(time.time()),
                tool_call_parser=info.tool_call_parser,
                reasoning_parser=info.reasoning_parser,
                task=info.task or "generate",
            )
            # Forget models no replica serves any more (a finished rollout).
            held = {r.model for r in self.pool.replicas} | {key}
            for stale in [k for k in self.models if k not in held]:
                del self.models[stale]
            log.info(
                "replica serves model %r (tokenizer %s, max_model_len %d)",
                info.served_model_name,
                key[1],
                info.max_model_len,
            )
        return key

    def served_models(self) -> list[Model]:
        """The models that at least one replica takes new requests for, one per name."""
        best: dict[str, Model] = {}
        for model in self._capacity():
            best.setdefault(model.name, model)
        return list(best.values())

    def listed_models(self) -> list[tuple[str, Model | None]]:
        """Every name whose requests are served or held (/v1/models): served now, seen on a
        replica that is out now, or configured; each with its best known variant, if any."""
        best: dict[str, Model | None] = {}
        for model in self._capacity():
            best.setdefault(model.name, model)
        for model in sorted(self.models.values(), key=lambda m: -m.created):
            best.setdefault(model.name, model)
        for name in self.settings.served_models:
            best.setdefault(name, None)
        return list(best.items())

    def _capacity(self) -> list[Model]:
        """Models with replicas taking work, the most capacity first."""
        weight: dict[Hashable, int] = {}
        for replica in self.pool.eligible:
            weight[replica.model] = weight.get(replica.model, 0) + replica.weight
        models = [self.models[k] for k in weight if k in self.models]
        return sorted(models, key=lambda m: (-weight[m.key], -m.created))

    @property
    def ready(self) -> bool:
        return bool(self.served_models())

    def awaits_replica(self, name: str) -> bool:
        """Whether a request for `name` has to wait for a replica: none serves it now, and it is
        a name of this endpoint (configured, or seen on a replica), or no name is known yet. A
        name nothing has named, once names are known, is refused (404) instead."""
        if any(model.name == name for model in self._capacity()):
            return False
        known = self.settings.served_models or self.models
        return not known or name in self.settings.served_models or self._seen(name)

    def _seen(self, name: str) -> bool:
        return any(model.name == name for model in self.models.values())

    async def hold(self, name: str) -> None:
        """Hold a request for `name` until a replica serves it (or its name turns out unknown),
        within the holding bounds; 503 + Retry-After beyond them."""
        await self.holding.wait(lambda: not self.awaits_replica(name), f"`{name}`")

    def resolve(self, name: str) -> Model:
        """The model a request for `name` is prepared with: during a rollout (one name, two
        tokenizers or limits), the one with the most serving capacity."""
        for model in self._capacity():
            if model.name == name:
                return model
        if self.awaits_replica(name):
            what = f"`{name}`" if self.settings.served_models or self.models else "any model"
            raise NoReplicaAvailableError(
                f"no replica of {what} takes requests now",
                headers={"retry-after": str(self.settings.retry_after)},
            )
        raise ModelNotFoundError(f"The model `{name}` does not exist.", param="model")

    # -- request preparation ---------------------------------------------------------------

    def prepare(
        self, req: GenerationRequest, request_id: str
    ) -> tuple[list[int], engine_pb2.GenerateRequest]:
        """Check the model, tokenize, check lengths, and build the engine request. The model
        chosen is recorded on the request's flow, so that dispatch routes to its replicas."""
        model = self.resolve(req.model)
        if model.task != "generate":
            api = "Chat Completions" if req.kind == "chat" else "Completions"
            raise NotImplementedByEngineError(f"The model does not support {api} API")
        flow = CURRENT_FLOW.get()
        if flow is not None:
            flow.model = model.key
        tok = model.tokenizer
        tools = req.tools
        if tools is not None:
            require_parser(tools, model.tool_call_parser)
        thinking = None
        if req.kind == "chat":
            extra = thinking = req.reasoning.template_kwargs(req.chat_template_kwargs)
            if tools is not None:
                extra = {**(extra or {}), "tools": tools.template_tools()}
            ids = tok.encode_chat(
                req.messages, req.add_generation_prompt, req.continue_final_message, extra
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
        request = engine_pb2.GenerateRequest(
            request_id=request_id,
            prompt_token_ids=engine_pb2.TokenIds(ids=ids),
            sampling=sp,
        )
        if tools is not None and tools.parsed:
            request.tool_calling.CopyFrom(tools.engine_spec(req.stream))
        if req.kind == "chat" and model.reasoning_parser:
            request.reasoning.CopyFrom(req.reasoning.engine_spec(thinking, req.stream))
        return ids, request

    # -- dispatch --------------------------------------------------------------------------

    async def open(self, prompt_ids: list[int], request: engine_pb2.GenerateRequest) -> Upstream:
        """Route and start a Generate call on a replica of the request's model; one retry
        elsewhere if it fails, or sends nothing within first_token_timeout, before output."""
        flow = CURRENT_FLOW.get()
        model = flow.model if flow is not None else None
        metadata = (("x-request-id", flow.request_id),) if flow is not None else None
        trace = flow.trace if flow is not None else None
        if trace is not None:  # the engine's span joins the request's trace
            metadata = (*(metadata or ()), *trace.headers())
        ttft = self.settings.first_token_timeout
        exclude: frozenset[str] = frozenset()
        last: GatewayError | None = None
        for attempt in range(2):
            route = RouteRequest(next(self._seq), random.getrandbits(64), prompt_ids)
            choice = self.policy(self.pool.snapshot(exclude, model), route)
            replica = self.pool.get(choice.key) if choice is not None else None
            if trace is not None:
                trace.stage("gateway.route", {REPLICA: replica.address} if replica else None)
            if replica is None:
                break
            if attempt:
                self.retries_total += 1
                self.metrics.retries.inc()
            tp = replica.weight
            self._bind(replica, tp)
            call = replica.stub.Generate(request, metadata=metadata)
            try:
                first = await self._first_message(call, ttft, replica, trace)
            except grpc.aio.AioRpcError as exc:
                self._unbind(replica, tp)
                code = exc.code()
                if code in REPLICA_FAILURES:
                    self.pool.report_failure(replica, f"{code.name}: {exc.details()}")
                last = from_rpc_error(exc)
                if code not in RETRYABLE:
                    raise last from None
                exclude = exclude | {replica.address}
                continue
            except TimeoutError:
                call.cancel()  # aborts the engine's request
                self._unbind(replica, tp)
                self.pool.report_stall(replica, f"no first message within {ttft:g}s")
                last = EngineTimeoutError(
                    f"the engine sent no token within {ttft:g}s", code="first_token_timeout"
                )
                exclude = exclude | {replica.address}
                continue
            except BaseException:
                call.cancel()
                self._unbind(replica, tp)
                raise
            if first is EOF:
                self._unbind(replica, tp)
                last = UpstreamError("the engine ended the stream without output")
                exclude = exclude | {replica.address}
                continue
            upstream = Upstream(replica, call, first, time.perf_counter(), tp)
            if trace is not None:
                trace.annotate({REPLICA: replica.address})
            if flow is not None:
                flow.upstream = upstream  # from here the sweeper watches its progress
            return upstream
        if last is not None:
            raise last
        raise NoReplicaAvailableError(
            "no engine replica is available",
            headers={"retry-after": str(self.settings.retry_after)},
        )

    def _bind(self, replica: Replica, tensor_parallel: int) -> None:
        self.pool.acquire(replica)
        self.latency.start(tensor_parallel)

    def _unbind(self, replica: Replica, tensor_parallel: int) -> None:
        self.pool.release(replica)
        self.latency.end(tensor_parallel)

    @staticmethod
    async def _first_message(
        call: Any, within: float, replica: Replica, trace: Trace | None
    ) -> Any:
        """The call's first message within `within` s; with tracing, the wait is a span."""
        try:
            async with asyncio.timeout(within):
                first = await call.read()
        except BaseException as exc:
            if trace is not None:
                trace.stage("gateway.first_token", {REPLICA: replica.address}, error=exc)
            raise
        if trace is not None:
            trace.stage("gateway.first_token", {REPLICA: replica.address})
        return first

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
            self._unbind(upstream.replica, upstream.tensor_parallel)

    # -- shutdown --------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """SIGTERM: /readyz fails, new requests get 503; after drain_timeout, requests still
        running end with an error (an SSE error event and [DONE] for streams)."""
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.drain_timeout
        log.info("draining: %d requests in flight, at most %gs", self.in_flight.value, timeout)
        asyncio.get_running_loop().call_later(timeout, self._end_drain)

    def _end_drain(self) -> None:
        ended = self.sweeper.end_all(
            ShuttingDownError("the gateway is shutting down; the request was not finished")
        )
        if ended:
            log.warning("drain over: %d requests ended with an error", ended)

    # -- the operator's signal -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight.value,
            "in_flight_avg": round(self.in_flight.mean(), 4),
            "window_s": self.settings.stats_window,
            "queued": self.admission.queued,
            "held": self.holding.held,
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
            "latency": self.latency.report(),
        }
