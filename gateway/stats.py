"""The operator's signals: requests in flight now and their time-weighted mean over a window,
and the latency the gateway saw per tensor-parallel degree over the same window.

The gauge integrates its value over time in O(1) per change and keeps one checkpoint of the
running integral per second; the windowed mean is the integral's growth over the window divided
by the window. Nothing runs in the background.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from scaleserve.latency import DegreeLatency, bucket, histogram


class TimeWeightedGauge:
    """An integer gauge with a windowed time-weighted mean."""

    __slots__ = ("_area", "_checkpoints", "_clock", "_last", "_step", "value", "window")

    def __init__(
        self, window: float, clock: Callable[[], float] = time.monotonic, step: float = 1.0
    ) -> None:
        self.window = window
        self._clock = clock
        self._step = step
        self.value = 0
        now = clock()
        self._last = now
        self._area = 0.0
        # (time, integral up to that time); the first one marks the gauge's start.
        self._checkpoints: deque[tuple[float, float]] = deque([(now, 0.0)])

    def _advance(self, now: float) -> None:
        self._area += self.value * (now - self._last)
        self._last = now
        if now - self._checkpoints[-1][0] >= self._step:
            self._checkpoints.append((now, self._area))
            horizon = now - self.window - self._step
            while len(self._checkpoints) > 2 and self._checkpoints[1][0] <= horizon:
                self._checkpoints.popleft()

    def add(self, delta: int) -> None:
        self._advance(self._clock())
        self.value += delta

    def mean(self) -> float:
        """Time-weighted mean over the last `window` seconds (or since start, if shorter)."""
        now = self._clock()
        self._advance(now)
        start = now - self.window
        # The latest checkpoint at or before the window's start (or the oldest one).
        t0, a0 = self._checkpoints[0]
        for t, a in self._checkpoints:
            if t > start:
                break
            t0, a0 = t, a
        span = now - t0
        if span <= 0:
            return float(self.value)
        return (self._area - a0) / span


class _Slot:
    __slots__ = ("tbt", "ttft")

    def __init__(self) -> None:
        self.ttft: Counter[float] = Counter()
        self.tbt: Counter[float] = Counter()


class LatencyWindow:
    """Per tensor-parallel degree, over the last `window` seconds: requests in flight on its
    replicas (time-weighted) and histograms of the time to first token and of the mean time
    between tokens of the requests that ended (scaleserve/latency.py). O(1) per request: one
    slot of counters per `step` seconds, summed only when /stats is read."""

    def __init__(
        self, window: float, clock: Callable[[], float] = time.monotonic, step: float = 1.0
    ) -> None:
        self.window = window
        self._clock = clock
        self._step = step
        self._in_flight: dict[int, TimeWeightedGauge] = {}
        self._slots: deque[tuple[int, dict[int, _Slot]]] = deque()

    def start(self, tensor_parallel: int) -> None:
        """A request went to a replica of this degree."""
        gauge = self._in_flight.get(tensor_parallel)
        if gauge is None:
            gauge = TimeWeightedGauge(self.window, self._clock, self._step)
            self._in_flight[tensor_parallel] = gauge
        gauge.add(1)

    def end(self, tensor_parallel: int) -> None:
        self._in_flight[tensor_parallel].add(-1)

    def record(self, tensor_parallel: int, ttft_ms: float, tbt_ms: float | None) -> None:
        """A request that ended on a replica of this degree (`tbt_ms` None: one token)."""
        tick = int(self._clock() // self._step)
        if not self._slots or self._slots[-1][0] != tick:
            self._slots.append((tick, {}))
            self._trim(tick)
        slot = self._slots[-1][1].setdefault(tensor_parallel, _Slot())
        slot.ttft[bucket(ttft_ms)] += 1
        if tbt_ms is not None:
            slot.tbt[bucket(tbt_ms)] += 1

    def _trim(self, tick: int) -> None:
        oldest = tick - math.ceil(self.window / self._step)
        while self._slots and self._slots[0][0] < oldest:
            self._slots.popleft()

    def report(self) -> list[dict[str, Any]]:
        """The /stats `latency` list: one entry per degree seen in the window."""
        self._trim(int(self._clock() // self._step))
        ttft: dict[int, Counter[float]] = {}
        tbt: dict[int, Counter[float]] = {}
        for _, degrees in self._slots:
            for tp, slot in degrees.items():
                ttft.setdefault(tp, Counter()).update(slot.ttft)
                tbt.setdefault(tp, Counter()).update(slot.tbt)
        out = []
        for tp in sorted(set(ttft) | set(self._in_flight), reverse=True):
            gauge = self._in_flight.get(tp)
            avg = gauge.mean() if gauge is not None else 0.0
            if avg <= 0 and tp not in ttft:
                continue
            entry = DegreeLatency(
                tp, avg, histogram(ttft.get(tp, Counter())), histogram(tbt.get(tp, Counter()))
            )
            out.append(entry.to_json())
        return out
