"""SIGTERM during streams: the gateway stops taking requests, drains, and ends what is still
running with an error event and [DONE]; no stream is cut silently."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fixtures.engines import EngineProcess, cores_paused
from tests.gateway.conftest import GatewayFactory, GatewayProcess
from tests.gateway.test_deadlines_and_models import stream_frames

pytestmark = pytest.mark.gateway

STREAMS = 20


def sigterm_mid_answer(
    gw: GatewayProcess,
    engines: list[EngineProcess],
    streams: int,
    inspect: Callable[[dict[str, Any]], None] = lambda stats: None,
) -> tuple[list[list], int]:
    """SIGTERM while `streams` streams are all mid-answer; their frames and the exit code.

    Both engines are held until every stream is placed (`inspect` then sees the gateway's
    /stats), then stepped until each stream has its first frame: they are all mid-answer, and
    stay so (paused) through the drain."""
    events = [threading.Event() for _ in range(streams)]
    first, second = engines
    with ThreadPoolExecutor(streams) as pool, cores_paused(engines):
        futures = [pool.submit(stream_frames, gw, ev) for ev in events]
        gw.wait_in_flight(streams)
        stats = gw.stats()
        inspect(stats)
        placed = {r["address"]: r["in_flight"] for r in stats["replicas"]}
        assert first.step_core_until(
            lambda: sum(ev.is_set() for ev in events) >= placed[first.address]
        )
        assert second.step_core_until(lambda: all(ev.is_set() for ev in events))
        gw.process.send_signal(signal.SIGTERM)
        results = [f.result(timeout=120) for f in futures]
        exit_code = gw.process.wait(60)
    return results, exit_code


def assert_each_ended_cleanly(results: list[list]) -> None:
    """Each stream finished within the drain or ended with the shutdown error; some did not."""
    for frames in results:
        assert frames[-1] == "[DONE]"
        last = frames[-2]
        if "error" in last:
            assert last["error"]["code"] == "shutting_down"
        else:  # finished within the drain
            assert last["choices"][0]["finish_reason"] == "length"
    assert any("error" in frames[-2] for frames in results)


def test_sigterm_during_streams_ends_each_one_cleanly(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--routing", "round-robin", "--drain-timeout", "3")
    results, exit_code = sigterm_mid_answer(gw, engine_replicas, STREAMS)
    assert_each_ended_cleanly(results)
    assert exit_code == 0, gw.log_tail()
