"""The engine process's lifecycle: loading -> serving -> draining, or dead if the core dies.

One `Runtime` per process holds the phase, the vLLM engine once loaded, the model's facts
and the in-flight registry; the gRPC service, the HTTP probes and the server share it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from scaleserve.engine.model_info import ModelFacts
from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.scheduler_stats import SchedulerSnapshot

Status = engine_pb2.HealthResponse.Status


class Phase(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    FAILED = "failed"  # the model did not load, or the engine core died


@dataclass
class Counters:
    requests_total: int = 0
    aborted_total: int = 0
    generated_tokens_total: int = 0


@dataclass
class Runtime:
    served_name: str
    phase: Phase = Phase.LOADING
    failure: str = ""
    engine: Any = None  # vllm AsyncLLM once loaded
    facts: ModelFacts | None = None
    scheduler: SchedulerSnapshot = field(default_factory=SchedulerSnapshot)
    counters: Counters = field(default_factory=Counters)
    in_flight: set[str] = field(default_factory=set)
    abort_requested: set[str] = field(default_factory=set)  # of in_flight, by the Abort RPC
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def engine_dead(self) -> bool:
        engine = self.engine
        return engine is not None and bool(engine.errored)

    def current_phase(self) -> Phase:
        if self.phase is not Phase.FAILED and self.engine_dead:
            self.phase = Phase.FAILED
            self.failure = "the engine core process died"
        return self.phase

    def health(self) -> engine_pb2.HealthResponse:
        phase = self.current_phase()
        if phase is Phase.SERVING:
            return engine_pb2.HealthResponse(status=Status.SERVING, message="serving")
        if phase is Phase.DRAINING:
            return engine_pb2.HealthResponse(status=Status.DRAINING, message="draining")
        if phase is Phase.LOADING:
            return engine_pb2.HealthResponse(status=Status.NOT_SERVING, message="loading model")
        return engine_pb2.HealthResponse(status=Status.NOT_SERVING, message=self.failure)

    def alive(self) -> bool:
        """The process and its engine core are alive (the liveness probe)."""
        return self.current_phase() is not Phase.FAILED

    def ready(self) -> bool:
        """New work is welcome (the readiness probe)."""
        return self.current_phase() is Phase.SERVING

    def start(self, request_id: str) -> None:
        self.in_flight.add(request_id)
        self.idle.clear()
        self.counters.requests_total += 1

    def request_abort(self, request_id: str) -> bool:
        """Mark an in-flight request aborted (one not yet handed to vLLM then never is);
        False when no such request is in flight."""
        if request_id not in self.in_flight:
            return False
        self.abort_requested.add(request_id)
        return True

    def finish(self, request_id: str) -> None:
        self.in_flight.discard(request_id)
        self.abort_requested.discard(request_id)
        if not self.in_flight:
            self.idle.set()

    def stats(self) -> engine_pb2.StatsResponse:
        facts = self.facts
        # vLLM reports scheduler figures per engine step; after an abort on an idle engine no
        # step follows, so the frontend's own count bounds them.
        unfinished = self.engine.get_num_unfinished_requests() if self.engine is not None else 0
        running = min(self.scheduler.running, unfinished)
        waiting = min(self.scheduler.waiting, unfinished - running)
        return engine_pb2.StatsResponse(
            running_requests=running,
            waiting_requests=waiting,
            kv_cache_usage=self.scheduler.kv_cache_usage if unfinished else 0.0,
            prefix_cache_hit_rate=self.scheduler.prefix_cache_hit_rate,
            served_model_name=self.served_name,
            max_model_len=facts.max_model_len if facts else 0,
            tensor_parallel_size=facts.tensor_parallel_size if facts else 0,
            in_flight_requests=len(self.in_flight),
            requests_total=self.counters.requests_total,
            aborted_total=self.counters.aborted_total,
            generated_tokens_total=self.counters.generated_tokens_total,
        )
