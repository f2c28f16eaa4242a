"""The concurrency signal: requests in flight now and their time-weighted mean over a window.

The gauge integrates its value over time in O(1) per change and keeps one checkpoint of the
running integral per second; the windowed mean is the integral's growth over the window divided
by the window. Nothing runs in the background.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


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
