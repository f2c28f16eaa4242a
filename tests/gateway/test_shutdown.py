"""SIGTERM during streams: the gateway stops taking requests, drains, and ends what is still
running with an error event and [DONE]; no stream is cut silently."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.engines import EngineProcess, cores_paused
from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_deadlines_and_models import stream_frames

pytestmark = pytest.mark.gateway

STREAMS = 20


def test_sigterm_during_streams_ends_each_one_cleanly(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "round-robin", "--drain-timeout", "3")
    events = [threading.Event() for _ in range(STREAMS)]
    first, second = engine_replicas
    # Both engines held until every stream is placed, then stepped until each stream has its
    # first frame: they are all mid-answer, and stay so (paused) through the drain.
    with ThreadPoolExecutor(STREAMS) as pool, cores_paused(engine_replicas):
        futures = [pool.submit(stream_frames, gw, ev) for ev in events]
        gw.wait_in_flight(STREAMS)
        placed = {r["address"]: r["in_flight"] for r in gw.stats()["replicas"]}
        assert first.step_core_until(
            lambda: sum(ev.is_set() for ev in events) >= placed[first.address]
        )
        assert second.step_core_until(lambda: all(ev.is_set() for ev in events))
        gw.process.send_signal(signal.SIGTERM)
        results = [f.result(timeout=120) for f in futures]
        exit_code = gw.process.wait(60)
    for frames in results:
        assert frames[-1] == "[DONE]"
        last = frames[-2]
        if "error" in last:
            assert last["error"]["code"] == "shutting_down"
        else:  # finished within the drain
            assert last["choices"][0]["finish_reason"] == "length"
    assert any("error" in frames[-2] for frames in results)
    assert exit_code == 0, gw.log_tail()
