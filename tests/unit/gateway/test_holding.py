"""Holding while no replica serves a model: the queue's order and bounds, and which requests a
gateway holds, serves or refuses."""

from __future__ import annotations

import asyncio

import pytest

from scaleserve.gateway.errors import ModelNotFoundError, NoReplicaAvailableError
from scaleserve.gateway.holding import Holding
from scaleserve.gateway.models import Model
from scaleserve.gateway.pool import SERVING, Endpoint
from scaleserve.gateway.service import Gateway
from scaleserve.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_held_requests_are_released_in_arrival_order_when_ready() -> None:
    holding = Holding(limit=8, timeout=60)
    ready = {"a": False, "b": False}
    resumed: list[str] = []

    async def request(name: str, model: str) -> None:
        await holding.wait(lambda: ready[model], model)
        resumed.append(name)

    tasks = [
        asyncio.create_task(request(name, model))
        for name, model in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"))
    ]
    await settle()
    assert holding.held == 4
    assert holding.wake() == 0  # nothing ready: all stay
    ready["a"] = True
    assert holding.wake() == 3
    await settle()
    assert resumed == ["a1", "a2", "a3"]
    assert holding.held == 1  # b1 waits for its own model
    ready["b"] = True
    holding.wake()
    await asyncio.gather(*tasks)
    assert resumed[-1] == "b1"
    assert holding.held == 0


@pytest.mark.asyncio
async def test_hold_is_bounded_in_count_and_time_with_retry_after() -> None:
    holding = Holding(limit=2, timeout=0.2, retry_after=5)
    never = asyncio.Event()
    held = [asyncio.create_task(holding.wait(never.is_set, "`m`")) for _ in range(2)]
    await settle()
    with pytest.raises(NoReplicaAvailableError) as full:
        await holding.wait(never.is_set, "`m`")
    assert full.value.status == 503
    assert full.value.headers["retry-after"] == "5"
    for task in held:
        with pytest.raises(NoReplicaAvailableError) as late:
            await task
        assert "within 0.2s" in late.value.message
    assert holding.held == 0
    with pytest.raises(NoReplicaAvailableError):  # 0: holding off, refused at once
        await Holding(limit=0, timeout=1).wait(never.is_set, "`m`")
    await Holding(limit=0, timeout=1).wait(lambda: True, "`m`")  # ready: never held


async def two_held(
    holding: Holding, ready: list[bool]
) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """Two requests held until `ready[0]`, both waiting by the time this returns."""
    first = asyncio.create_task(holding.wait(lambda: ready[0], "`m`"))
    second = asyncio.create_task(holding.wait(lambda: ready[0], "`m`"))
    await settle()
    return first, second


@pytest.mark.asyncio
async def test_a_cancelled_held_request_leaves_the_queue_at_once() -> None:
    holding = Holding(limit=4, timeout=60)
    ready = [False]
    first, second = await two_held(holding, ready)
    first.cancel()  # the client disconnected
    with pytest.raises(asyncio.CancelledError):
        await first
    assert holding.held == 1
    ready[0] = True
    assert holding.wake() == 1
    await second
    assert holding.held == 0


@pytest.mark.asyncio
async def test_a_wake_between_a_cancel_and_its_resumption_releases_only_the_live_ones() -> None:
    holding = Holding(limit=4, timeout=60)
    ready = [False]
    first, second = await two_held(holding, ready)
    first.cancel()  # its future is cancelled now, its task resumes later
    ready[0] = True
    assert holding.wake() == 1  # the replica came up before the cancelled task ran
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert holding.held == 0


def ready_replica(gw: Gateway, address: str, name: str) -> None:
    key = (name, "t1")
    gw.models.setdefault(key, Model(key, name, 1024, 512, None, 0))  # type: ignore[arg-type]
    replica = gw.pool.get(address)
    assert replica is not None
    replica.healthy, replica.engine_status = True, SERVING
    replica.weight, replica.model = 1, key


@pytest.mark.asyncio
async def test_a_gateway_holds_for_its_model_until_a_replica_serves_it() -> None:
    gw = Gateway(GatewaySettings(served_models=("tiny",)))
    try:
        assert gw.awaits_replica("tiny")  # scaled to zero: held
        assert not gw.awaits_replica("other")  # never this endpoint's: 404 at once
        with pytest.raises(ModelNotFoundError):
            gw.resolve("other")
        assert [name for name, _ in gw.listed_models()] == ["tiny"]
        held = asyncio.create_task(gw.hold("tiny"))
        await settle()
        assert gw.stats()["held"] == 1
        gw.pool.set_endpoints([Endpoint("a:1")])  # discovered, not probed yet: still held
        assert gw.holding.held == 1
        ready_replica(gw, "a:1", "tiny")
        gw.pool.set_endpoints([Endpoint("a:1")])  # what a probe's refresh does
        assert (await asyncio.wait_for(held, 5)).name == "tiny"  # released with its model
        assert gw.stats()["held"] == 0
        assert gw.resolve("tiny").name == "tiny"
        gw.pool.report_failure(gw.pool.replicas[0], "gone")  # known, all out: held again
        assert gw.awaits_replica("tiny")
        assert [name for name, _ in gw.listed_models()] == ["tiny"]
    finally:
        await gw.pool.close()


@pytest.mark.asyncio
async def test_without_a_configured_name_the_first_replica_decides() -> None:
    gw = Gateway(GatewaySettings())
    try:
        assert gw.awaits_replica("anything")  # no name known yet: held
        held = asyncio.create_task(gw.hold("anything"))
        await settle()
        gw.pool.set_endpoints([Endpoint("a:1")])
        ready_replica(gw, "a:1", "tiny")
        gw.pool.set_endpoints([Endpoint("a:1")])
        with pytest.raises(ModelNotFoundError):
            await asyncio.wait_for(held, 5)  # released, then refused by name
        with pytest.raises(ModelNotFoundError):
            gw.resolve("anything")
    finally:
        await gw.pool.close()
