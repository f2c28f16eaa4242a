"""The latest scheduler figures from vLLM (running, waiting, KV-cache use, prefix-cache hits).

vLLM hands its per-step SchedulerStats to stat loggers; `SchedulerSnapshot.logger_factory()`
plugs a tiny logger in that keeps the latest values for the Stats RPC.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PREFIX_CACHE_WINDOW = 1000  # requests over which the hit rate is computed


@dataclass
class SchedulerSnapshot:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    stepped_at: float = 0.0  # monotonic time of the core's last reported step (the watchdog's)
    _window: deque[tuple[int, int]] = field(default_factory=deque)  # (queries, hits) per update
    _requests: deque[int] = field(default_factory=deque)
    _queries: int = 0
    _hits: int = 0
    _request_count: int = 0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self._hits / self._queries if self._queries else 0.0

    def update(self, scheduler_stats: Any) -> None:
        self.running = int(scheduler_stats.num_running_reqs)
        self.waiting = int(scheduler_stats.num_waiting_reqs)
        self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        prefix = scheduler_stats.prefix_cache_stats
        if prefix is None:
            return
        if prefix.reset:
            self._window.clear()
            self._requests.clear()
            self._queries = self._hits = self._request_count = 0
        if prefix.requests:
            self._window.append((prefix.queries, prefix.hits))
            self._requests.append(prefix.requests)
            self._queries += prefix.queries
            self._hits += prefix.hits
            self._request_count += prefix.requests
            while self._request_count > PREFIX_CACHE_WINDOW and len(self._window) > 1:
                queries, hits = self._window.popleft()
                self._queries -= queries
                self._hits -= hits
                self._request_count -= self._requests.popleft()

    def logger_factory(self) -> Any:
        """A vLLM StatLoggerFactory whose loggers feed this snapshot."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        snapshot = self

        class SnapshotLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                snapshot.stepped_at = time.monotonic()
                if scheduler_stats is not None:
                    snapshot.update(scheduler_stats)

            def log_engine_initialized(self) -> None:
                pass

        return SnapshotLogger
