"""The engine process's lifecycle: loading -> serving -> draining, or dead if the core dies.

One `Runtime` per process holds the phase, the vLLM engine once loaded, the model's facts
and the in-flight registry; the gRPC service, the HTTP probes and the server share it.
"""

from __future__ import annotations

import asyncio
import enum
import time
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
    # vLLM's composed Parser class for --tool-call-parser and --reasoning-parser, once loaded
    output_parser: Any = None
    scheduler: SchedulerSnapshot = field(default_factory=SchedulerSnapshot)
    counters: Counters = field(default_factory=Counters)
    in_flight: set[str] = field(default_factory=set)
    abort_requested: set[str] = field(default_factory=set)  # of in_flight, by the Abort RPC
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # The watchdog: with requests in flight and no output from the core for this long, the
    # engine stops saying SERVING (a core alive but stuck, e.g. a collective that never
    # returns, would otherwise keep its requests forever). 0 disables it.
    stall_timeout: float = 0.0
    progress_at: float = field(default_factory=time.monotonic)  # last output (or first work)

    def __post_init__(self) -> None:
        self.idle.set()

    def progress(self) -> None:
        """A request received output (called once per engine output, so kept to one store)."""
        self.progress_at = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds without progress while requests are in flight (0 when idle or disabled).
        Progress is any engine step the core reports (a request held back by a slow client
        still lets the core step) or any output a request receives."""
        if not self.stall_timeout or not self.in_flight:
            return 0.0
        waited = time.monotonic() - max(self.progress_at, self.scheduler.stepped_at)
        return waited if waited >= self.stall_timeout else 0.0

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
            stalled = self.stalled_for()
            if stalled:
                return engine_pb2.HealthResponse(
                    status=Status.NOT_SERVING,
                    message=f"stalled: no progress for {stalled:.0f}s with "
                    f"{len(self.in_flight)} requests in flight",
                )
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
        return self.current_phase() is Phase.SERVING and not self.stalled_for()

    def start(self, request_id: str) -> None:
        if not self.in_flight:  # the stall clock starts when work arrives at an idle engine
            self.progress_at = time.monotonic()
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
