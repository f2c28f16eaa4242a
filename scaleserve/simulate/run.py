"""Run one strategy on one traffic: the event loop, the traffic driver and the invariants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scaleserve.profiles import Profile
from scaleserve.simulate.endpoint import Endpoint, Limits
from scaleserve.simulate.engine import Request
from scaleserve.simulate.events import EventQueue
from scaleserve.simulate.strategies import Strategy
from scaleserve.simulate.traffic import OpenLoop, Sweep, Trace, Traffic

Progress = Callable[[float], None]  # told the simulated time reached


@dataclass(frozen=True)
class Outcome:
    """What a run leaves: the endpoint (requests, accounting, timeline) and the invariants."""

    strategy: Strategy
    endpoint: Endpoint
    duration_s: float
    violations: tuple[str, ...]

    @property
    def conserved(self) -> bool:
        e = self.endpoint
        return e.arrived == len(e.finished) + len(e.rejected) + e.running()


def simulate(
    profile: Profile,
    traffic: Traffic,
    strategy: Strategy,
    *,
    seed: int = 0,
    routing: str = "least-in-flight",
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> Outcome:
    events = EventQueue()
    endpoint = Endpoint(events, profile, routing=routing, limits=limits or Limits(), seed=seed)
    violations: list[str] = []
    strategy.start(0.0, endpoint)
    duration = traffic.duration_s

    def tick(now: float) -> None:
        strategy.tick(now, endpoint)
        if now + strategy.interval_s <= duration:
            events.schedule(now + strategy.interval_s, tick)

    events.schedule(strategy.interval_s, tick)
    if isinstance(traffic, OpenLoop | Trace):
        _open_loop(events, endpoint, traffic, np.random.default_rng(seed))
    else:
        _closed_loop(events, endpoint, traffic, np.random.default_rng(seed))
    step = max(duration / 200, 1.0)
    t = 0.0
    while t < duration:
        t = min(t + step, duration)
        events.run(t)
        if progress is not None:
            progress(t)
    endpoint.take_in_flight_avg(duration)  # accounts up to the end
    # the endpoint tracks the most GPUs it held at every change, not only at passes
    if endpoint.max_gpus > strategy.gpu_limit:
        violations.append(f"held {endpoint.max_gpus} GPUs, over the limit {strategy.gpu_limit}")
    if strategy.ours and endpoint.dark_events:
        violations.append(f"zero ready replicas at {endpoint.dark_events[0]:.0f}s")
    return Outcome(strategy, endpoint, duration, tuple(violations))


def _open_loop(
    events: EventQueue, endpoint: Endpoint, traffic: OpenLoop | Trace, rng: np.random.Generator
) -> None:
    times, inputs, outputs = traffic.generate(rng)
    n = len(times)

    def arrive(now: float, i: int) -> None:
        endpoint.arrive(now, Request(i, now, int(inputs[i]), int(outputs[i])))
        if i + 1 < n:
            events.schedule(float(times[i + 1]), arrive, i + 1)

    if n:
        events.schedule(float(times[0]), arrive, 0)


def _closed_loop(
    events: EventQueue, endpoint: Endpoint, traffic: Sweep, rng: np.random.Generator
) -> None:
    active: set[int] = set()
    count = [0]

    def send(now: float, stream: int) -> None:
        if now >= traffic.duration_s:
            active.discard(stream)
            return
        request = Request(count[0], now, *traffic.request_lengths(count[0], rng))
        request.stream = stream
        count[0] += 1
        endpoint.arrive(now, request)

    def ended(now: float, request: Request) -> None:
        if request.stream >= traffic.streams_at(now):
            active.discard(request.stream)
        else:
            events.schedule(now, send, request.stream)

    def stage(now: float) -> None:
        for stream in range(traffic.streams_at(now)):
            if stream not in active:
                active.add(stream)
                events.schedule(now, send, stream)
        if now + traffic.stage_s < traffic.duration_s:
            events.schedule(now + traffic.stage_s, stage)

    endpoint.on_end = ended
    events.schedule(0.0, stage)
