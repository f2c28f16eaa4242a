"""The replica pool's membership and accounting (channels are created but never connected)."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.pool import Endpoint, Replica, ReplicaPool

pytestmark = pytest.mark.unit


def make_ready(replica: Replica, weight: int = 1) -> None:
    replica.healthy = True
    replica.engine_status = engine_pb2.HealthResponse.SERVING
    replica.weight = weight


@pytest.mark.asyncio
async def test_snapshot_holds_only_replicas_that_take_new_work() -> None:
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint("127.0.0.1:1"), Endpoint("127.0.0.1:2"), Endpoint("127.0.0.1:3")])
    assert pool.snapshot().replicas == ()  # nothing probed yet
    for r in pool.replicas:
        make_ready(r, weight=2)
    pool.set_endpoints(
        [
            Endpoint("127.0.0.1:1"),
            Endpoint("127.0.0.1:2", terminating=True),
            Endpoint("127.0.0.1:3", serving=False),
        ]
    )
    snap = pool.snapshot()
    assert [(r.key, r.weight) for r in snap.replicas] == [("127.0.0.1:1", 2)]
    assert pool.snapshot(exclude=frozenset({"127.0.0.1:1"})).replicas == ()
    await pool.close()


@pytest.mark.asyncio
async def test_terminating_replicas_serve_only_when_nothing_else_can() -> None:
    """A pod in its preStop while its replacement is still being probed: rather than failing
    every request, the terminating replica that still serves takes them (as kube-proxy)."""
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint("127.0.0.1:1"), Endpoint("127.0.0.1:2")])
    old, new = pool.replicas
    make_ready(old)
    pool.set_endpoints([Endpoint("127.0.0.1:1", terminating=True), Endpoint("127.0.0.1:2")])
    assert [r.key for r in pool.snapshot().replicas] == ["127.0.0.1:1"]  # new: not probed yet
    assert (pool.takes_work(old), pool.takes_work(new)) == (True, False)  # /stats "serving"
    make_ready(new)
    pool.set_endpoints([Endpoint("127.0.0.1:1", terminating=True), Endpoint("127.0.0.1:2")])
    assert [r.key for r in pool.snapshot().replicas] == ["127.0.0.1:2"]
    assert (pool.takes_work(old), pool.takes_work(new)) == (False, True)
    # one that stopped serving (its readiness failed) or whose engine drains takes nothing
    pool.set_endpoints([Endpoint("127.0.0.1:1", serving=False, terminating=True)])
    assert pool.snapshot().replicas == ()
    pool.set_endpoints([Endpoint("127.0.0.1:1", terminating=True)])
    old.engine_status = engine_pb2.HealthResponse.DRAINING
    pool.set_endpoints([Endpoint("127.0.0.1:1", terminating=True)])
    assert pool.snapshot().replicas == ()
    await pool.close()


@pytest.mark.asyncio
async def test_departed_replica_finishes_its_requests_then_closes() -> None:
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint("127.0.0.1:1"), Endpoint("127.0.0.1:2")])
    a, b = pool.replicas
    make_ready(a)
    make_ready(b)
    pool.set_endpoints([Endpoint("127.0.0.1:1"), Endpoint("127.0.0.1:2")])
    pool.acquire(b)
    pool.set_endpoints([Endpoint("127.0.0.1:1")])  # b leaves while serving one request
    assert [r.key for r in pool.snapshot().replicas] == ["127.0.0.1:1"]
    assert pool.get("127.0.0.1:2") is b  # still held for its request
    pool.release(b)
    assert pool.get("127.0.0.1:2") is None
    assert b.in_flight == 0
    await pool.close()


@pytest.mark.asyncio
async def test_idle_replicas_that_leave_are_closed_at_once() -> None:
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint(f"127.0.0.1:{port}") for port in (1, 2, 3)])
    for r in pool.replicas:
        make_ready(r)
    pool.set_endpoints([Endpoint("127.0.0.1:2")])  # two idle replicas leave in one update
    assert [r.address for r in pool.replicas] == ["127.0.0.1:2"]
    assert [r.key for r in pool.snapshot().replicas] == ["127.0.0.1:2"]
    await pool.close()


@pytest.mark.asyncio
async def test_failed_replica_is_taken_out_until_probed_back() -> None:
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint("127.0.0.1:1")])
    (a,) = pool.replicas
    make_ready(a, weight=4)
    pool.set_endpoints([Endpoint("127.0.0.1:1")])
    assert pool.any_eligible()
    pool.report_failure(a, "UNAVAILABLE")
    assert not pool.any_eligible()
    assert a.last_error == "UNAVAILABLE"
    await pool.close()


class SlowHealth:
    """A stub whose Health times out; meanwhile `during` runs (e.g. stream output arriving)."""

    def __init__(self, during: object = None) -> None:
        self.during = during

    async def Health(self, request: object, **call: object) -> None:  # noqa: N802
        await asyncio.sleep(0)
        if callable(self.during):
            self.during()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata()
        )


@pytest.mark.asyncio
async def test_a_late_probe_keeps_a_replica_that_is_still_streaming() -> None:
    pool = ReplicaPool()
    pool.set_endpoints([Endpoint("127.0.0.1:1"), Endpoint("127.0.0.1:2")])
    streaming, silent = pool.replicas
    for r in (streaming, silent):
        make_ready(r)

    def output_arrives() -> None:
        streaming.outputs += 1

    streaming.stub = SlowHealth(output_arrives)
    silent.stub = SlowHealth()
    await pool.probe_all()
    assert streaming.healthy  # its streams kept delivering while the probe waited
    assert not silent.healthy  # no sign of life: taken out
    assert [r.key for r in pool.snapshot().replicas] == ["127.0.0.1:1"]
    await pool.close()


@pytest.mark.asyncio
async def test_a_replica_dropped_while_it_is_probed_does_not_end_the_probes() -> None:
    """Discovery drops a replica whose probe is waiting: closing its channel cancels the call
    (gRPC raises CancelledError), which must end that probe, not the health loop."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks HTTP/2
        pool = ReplicaPool(health_interval=0.05, health_timeout=30)
        pool.set_endpoints([Endpoint(f"127.0.0.1:{silent.getsockname()[1]}")])
        health = asyncio.create_task(pool.run_health())
        await asyncio.sleep(0.5)  # its probe waits on the silent server
        pool.set_endpoints([])  # its channel closes under the probe
        await asyncio.sleep(0.3)
        assert not health.done(), health
        pool.set_endpoints([Endpoint("127.0.0.1:1")])  # nothing listens there
        (refused,) = pool.replicas
        for _ in range(100):  # the loop still probes: the new replica's probe fails
            if refused.last_error:
                break
            await asyncio.sleep(0.05)
        assert refused.last_error.startswith("UNAVAILABLE"), refused.last_error
        health.cancel()
        await pool.close()
