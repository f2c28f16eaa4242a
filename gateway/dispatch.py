"""Placing a request's engine call on a replica: the routing policy's choice, one retry on
another replica for a call that fails before any output, and the accounting of open calls.

`on_a_replica` is the one routing loop, shared by the streamed Generate call (`Dispatcher`)
and the unary Embed call (embed_route.py); each supplies one attempt on a chosen replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.deadlines import CURRENT_FLOW
from scaleserve.gateway.errors import (
    REPLICA_FAILURES,
    RETRYABLE,
    EngineTimeoutError,
    GatewayError,
    NoReplicaAvailableError,
    UpstreamError,
    from_rpc_error,
)
from scaleserve.gateway.pool import EOF, Replica
from scaleserve.gateway.routing import RouteRequest
from scaleserve.tracing import REPLICA, Trace

if TYPE_CHECKING:
    from scaleserve.gateway.service import Gateway

STATUS_WAIT_S = 2.0  # how long a finished call may take to deliver its status
T = TypeVar("T")


class RetryElsewhere(Exception):  # noqa: N818 - a signal to the loop, not a failure
    """An attempt failed before any output in a way another replica may not: `error` is what
    the client gets if no other replica does better."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


async def on_a_replica(
    gateway: Gateway,
    model: Hashable,
    ids: Sequence[int],
    attempt: Callable[[Replica], Awaitable[T]],
    trace: Trace | None = None,
) -> T:
    """`attempt` on the replica of `model` the policy picks for the request's token `ids`; once
    more on another one if it fails retryably. A gRPC failure of the replica itself takes it out
    of routing at once."""
    exclude: frozenset[str] = frozenset()
    last: GatewayError | None = None
    for n in range(2):
        route = RouteRequest(next(gateway.seq), random.getrandbits(64), ids)
        choice = gateway.policy(gateway.pool.snapshot(exclude, model), route)
        replica = gateway.pool.get(choice.key) if choice is not None else None
        if trace is not None:
            trace.stage("gateway.route", {REPLICA: replica.address} if replica else None)
        if replica is None:
            break
        if n:
            gateway.retries_total += 1
            gateway.metrics.retries.inc()
        try:
            return await attempt(replica)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in REPLICA_FAILURES:
                gateway.pool.report_failure(replica, f"{code.name}: {exc.details()}")
            last = from_rpc_error(exc)
            if code not in RETRYABLE:
                raise last from None
        except RetryElsewhere as retry:
            last = retry.error
        exclude = exclude | {replica.address}
    if last is not None:
        raise last
    raise NoReplicaAvailableError(
        "no engine replica is available",
        headers={"retry-after": str(gateway.settings.retry_after)},
    )


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


class Dispatcher:
    """Generate calls: opened on a replica (first message within first_token_timeout), read,
    and ended with the replica's in-flight count and the latency report kept right."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.pool = gateway.pool
        self.latency = gateway.latency

    async def open(self, prompt_ids: list[int], request: engine_pb2.GenerateRequest) -> Upstream:
        """Start the call on a replica of the request's model (its flow's); one retry elsewhere
        if it fails, or sends nothing within first_token_timeout, before output."""
        flow = CURRENT_FLOW.get()
        metadata = (("x-request-id", flow.request_id),) if flow is not None else None
        trace = flow.trace if flow is not None else None
        if trace is not None:  # the engine's span joins the request's trace
            metadata = (*(metadata or ()), *trace.headers())
        ttft = self.gateway.settings.first_token_timeout

        async def attempt(replica: Replica) -> Upstream:
            tp = replica.weight
            self._bind(replica, tp)
            call = replica.stub.Generate(request, metadata=metadata)
            try:
                first = await self._first_message(call, ttft, replica, trace)
            except grpc.aio.AioRpcError:
                self._unbind(replica, tp)
                raise
            except TimeoutError:
                call.cancel()  # aborts the engine's request
                self._unbind(replica, tp)
                self.pool.report_stall(replica, f"no first message within {ttft:g}s")
                raise RetryElsewhere(
                    EngineTimeoutError(
                        f"the engine sent no token within {ttft:g}s", code="first_token_timeout"
                    )
                ) from None
            except BaseException:
                call.cancel()
                self._unbind(replica, tp)
                raise
            if first is EOF:
                self._unbind(replica, tp)
                raise RetryElsewhere(UpstreamError("the engine ended the stream without output"))
            return Upstream(replica, call, first, time.perf_counter(), tp)

        model = flow.model if flow is not None else None
        upstream = await on_a_replica(self.gateway, model, prompt_ids, attempt, trace)
        if trace is not None:
            trace.annotate({REPLICA: upstream.replica.address})
        if flow is not None:
            flow.upstream = upstream  # from here the sweeper watches its progress
        return upstream

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
