"""The event queue: callbacks run in time order, ties in the order they were scheduled."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class EventQueue:
    """A discrete-event clock. `schedule(t, fn, *args)` runs fn(t, *args) at simulated time t."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.now = 0.0

    def schedule(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        if at < self.now:
            raise ValueError(f"event at {at} is in the past (now {self.now})")
        heapq.heappush(self._heap, (at, next(self._seq), fn, args))

    def run(self, until: float) -> None:
        """Run every event due at or before `until`, then leave the clock at `until`."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            at, _, fn, args = heapq.heappop(heap)
            self.now = at
            fn(at, *args)
        self.now = max(self.now, until)

    def __len__(self) -> int:
        return len(self._heap)
