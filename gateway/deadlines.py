"""Deadlines of the requests in flight, watched by one sweeper instead of a timer per token.

Each generation request has a `Flow`. Relaying a token costs one counter increment here; every
`tick` the sweeper compares each flow's progress with its last look and ends the flows that have
not moved for too long: an engine silent between messages (`token_idle_timeout`) or a client
that stopped reading, its write blocked (`write_timeout`). Ending a flow cancels its task with
the reason attached; the app's edge turns the reason into the client's error (a JSON error
before the first byte, an SSE error event and [DONE] after it) or, for a client that does not
read, resets its connection. The time to the first token and the queue wait are per-request timers
(`Dispatcher.open`, `Admission`), not per-token work.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scaleserve.gateway.errors import EngineTimeoutError, GatewayError

if TYPE_CHECKING:
    from scaleserve.tracing import Trace

log = logging.getLogger("scaleserve.gateway")
# Scope key of a callable that resets the request's connection, buffered output and all
# (server.py): a graceful close would wait to flush to a client that does not read.
DROP_CONNECTION = "scaleserve.drop_connection"

# The flow of the request the current task serves (set at the edge, read by the dispatcher and
# the log filter).
CURRENT_FLOW: contextvars.ContextVar[Flow | None] = contextvars.ContextVar(
    "scaleserve_gateway_flow", default=None
)


def current_trace() -> Trace | None:
    """The trace of the request the current task serves (None when tracing is off)."""
    flow = CURRENT_FLOW.get()
    return flow.trace if flow is not None else None


class Flow:
    """One generation request's progress, as the sweeper sees it."""

    __slots__ = (
        "_seen",
        "_seen_at",
        "ended",
        "error",
        "finished",
        "model",
        "request_id",
        "started",
        "task",
        "trace",
        "upstream",
        "writes",
        "writing",
    )

    def __init__(self, task: asyncio.Task[Any], request_id: str) -> None:
        self.task = task
        self.request_id = request_id
        self.upstream: Any = None  # dispatch.Upstream once the engine's first message came
        self.trace: Trace | None = None  # set only when tracing is on
        self.model: Any = None  # key of the model the request was prepared for
        self.started = False  # response headers sent
        self.finished = False  # the last body part sent
        self.writes = 0  # completed writes to the client
        self.writing = False  # a write is waiting for the client to read
        self.ended = False
        self.error: GatewayError | None = None  # what the client is told (None: nothing)
        self._seen = -1
        self._seen_at = 0.0

    @property
    def progress(self) -> int:
        up = self.upstream
        return self.writes + (up.reads if up is not None else 0)

    def end(self, error: GatewayError | None) -> None:
        """Stop the request: its task is cancelled; `error` is what the client gets."""
        if self.ended:
            return
        self.ended = True
        self.error = error
        self.task.cancel()


def bind_send(flow: Flow, send: Any) -> Any:
    """`send` that adds the request id to the response headers, counts completed writes and
    marks a write waiting for the client (a few attribute stores per token)."""
    header = (b"x-request-id", flow.request_id.encode())

    async def tracked(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
            flow.started = True
        elif not message.get("more_body", False):
            flow.finished = True
        flow.writing = True
        await send(message)
        flow.writing = False
        flow.writes += 1

    return tracked


class Sweeper:
    """Ends flows whose engine or client stopped moving; one task for all of them."""

    def __init__(
        self,
        idle_timeout: float,
        write_timeout: float,
        on_engine_stall: Callable[[Any], None],
    ) -> None:
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.on_engine_stall = on_engine_stall
        self.flows: set[Flow] = set()
        self.tick = max(0.05, min(1.0, idle_timeout / 4, write_timeout / 4))
        self.write_stalls = 0
        self.idle_stalls = 0
        self.last_tick = time.monotonic()  # the liveness probe's proof that the loop runs

    def sweep(self, now: float) -> None:
        for flow in list(self.flows):
            up = flow.upstream
            if up is None or flow.ended:
                continue  # queued or waiting for its first token: deadlines of their own
            progress = flow.progress
            if progress != flow._seen:
                flow._seen, flow._seen_at = progress, now
                continue
            waited = now - flow._seen_at
            if flow.writing:
                if waited >= self.write_timeout:
                    self.write_stalls += 1
                    log.warning(
                        "request %s: client has not read for %.0fs; closing",
                        flow.request_id,
                        waited,
                    )
                    flow.end(None)
            elif not up.complete and waited >= self.idle_timeout:
                self.idle_stalls += 1
                self.on_engine_stall(up.replica)
                flow.end(
                    EngineTimeoutError(
                        f"the engine sent nothing for {self.idle_timeout:g}s",
                        code="token_idle_timeout",
                    )
                )

    def end_all(self, error: GatewayError) -> int:
        """End every flow (the end of a drain); returns how many."""
        flows = [f for f in self.flows if not f.ended]
        for flow in flows:
            flow.end(error)
        return len(flows)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            self.last_tick = time.monotonic()
            self.sweep(loop.time())
