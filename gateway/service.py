"""The gateway below HTTP: the models its replicas serve, admission, holding, dispatch, the
accounting of requests (stats, metrics, latency) and the drain."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Hashable
from typing import Any

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.deadlines import Sweeper, current_trace
from scaleserve.gateway.dispatch import Dispatcher, Upstream
from scaleserve.gateway.errors import ModelNotFoundError, NoReplicaAvailableError, ShuttingDownError
from scaleserve.gateway.holding import Holding
from scaleserve.gateway.limits import Admission
from scaleserve.gateway.metrics import GatewayMetrics
from scaleserve.gateway.models import Model, model_key
from scaleserve.gateway.pool import ReplicaPool
from scaleserve.gateway.routing import get_policy
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.gateway.stats import LatencyWindow, TimeWeightedGauge
from scaleserve.gateway.tokenizer import ModelTokenizer
from scaleserve.tracing import COMPLETION_TOKENS, FINISH_REASON, PROMPT_TOKENS

log = logging.getLogger("scaleserve.gateway")


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
        self.seq = itertools.count()  # the routing policies' request sequence
        self._model_lock = asyncio.Lock()
        self.metrics = GatewayMetrics(self.stats)
        self._request_counters: dict[tuple[str, int], Any] = {}
        self._prompt_tokens = self.metrics.tokens.labels("prompt")
        self._completion_tokens = self.metrics.tokens.labels("completion")
        self.dispatch = Dispatcher(self)

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

    def lookup(self, name: str) -> Model | None:
        """The model a request for `name` is prepared with: during a rollout (one name, two
        tokenizers or limits), the one with the most serving capacity; None when the request
        has to wait for a replica (see awaits_replica); 404 for a name nothing serves."""
        for model in self._capacity():
            if model.name == name:
                return model
        if self._may_serve(name):
            return None
        raise ModelNotFoundError(f"The model `{name}` does not exist.", param="model")

    def awaits_replica(self, name: str) -> bool:
        """Whether a request for `name` has to wait for a replica: none serves it now, and it is
        a name of this endpoint (configured, or seen on a replica), or no name is known yet. A
        name nothing has named, once names are known, is refused (404) instead."""
        if any(model.name == name for model in self._capacity()):
            return False
        return self._may_serve(name)

    def _may_serve(self, name: str) -> bool:
        known = self.settings.served_models or self.models
        return not known or name in self.settings.served_models or self._seen(name)

    def _seen(self, name: str) -> bool:
        return any(model.name == name for model in self.models.values())

    async def hold(self, name: str) -> Model:
        """Hold a request for `name` until a replica serves it (or its name turns out unknown),
        within the holding bounds; 503 + Retry-After beyond them. Returns its model."""
        await self.holding.wait(lambda: not self.awaits_replica(name), f"`{name}`")
        return self.resolve(name)

    def resolve(self, name: str) -> Model:
        """`lookup`, with a request that would have to wait refused (503 + Retry-After)."""
        model = self.lookup(name)
        if model is None:
            what = f"`{name}`" if self.settings.served_models or self.models else "any model"
            raise NoReplicaAvailableError(
                f"no replica of {what} takes requests now",
                headers={"retry-after": str(self.settings.retry_after)},
            )
        return model

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
