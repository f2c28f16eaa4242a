"""The engine runtime's request bookkeeping (pure: no vLLM)."""

from __future__ import annotations

import time

import pytest

from scaleserve.engine.lifecycle import Phase, Runtime
from scaleserve.engine.proto import engine_pb2

pytestmark = pytest.mark.unit

SERVING = engine_pb2.HealthResponse.SERVING
NOT_SERVING = engine_pb2.HealthResponse.NOT_SERVING


def test_abort_is_recorded_only_for_a_request_in_flight() -> None:
    runtime = Runtime("tiny")
    assert runtime.request_abort("unknown") is False
    assert runtime.abort_requested == set()
    runtime.start("a")
    assert runtime.request_abort("a") is True
    assert runtime.abort_requested == {"a"}


def test_finish_forgets_the_abort_so_a_reused_id_starts_clean() -> None:
    runtime = Runtime("tiny")
    runtime.start("a")
    runtime.request_abort("a")
    runtime.finish("a")
    assert runtime.abort_requested == set()
    assert runtime.idle.is_set()
    runtime.start("a")
    assert "a" not in runtime.abort_requested
    assert not runtime.idle.is_set()


class FakeEngine:  # the runtime only asks a loaded engine whether its core died
    errored = False


def serving_runtime(stall_timeout: float) -> Runtime:
    runtime = Runtime("tiny", stall_timeout=stall_timeout)
    runtime.engine = FakeEngine()
    runtime.phase = Phase.SERVING
    return runtime


def test_watchdog_turns_not_serving_without_progress_while_requests_are_in_flight() -> None:
    runtime = serving_runtime(stall_timeout=5)
    runtime.start("a")
    runtime.progress_at -= 6  # six seconds without an engine step or an output
    assert runtime.health().status == NOT_SERVING
    assert "stalled" in runtime.health().message
    assert not runtime.ready()
    assert runtime.alive()  # readiness only: the process is not restarted for it
    runtime.progress()
    assert runtime.health().status == SERVING
    assert runtime.ready()


def test_watchdog_counts_core_steps_as_progress_and_ignores_an_idle_engine() -> None:
    runtime = serving_runtime(stall_timeout=5)
    runtime.start("a")
    runtime.progress_at -= 6
    runtime.scheduler.stepped_at = time.monotonic()  # a step without output for this request
    assert runtime.health().status == SERVING
    runtime.finish("a")
    runtime.scheduler.stepped_at -= 60
    assert runtime.health().status == SERVING  # nothing in flight: nothing can stall
    runtime.start("b")  # work arriving at an idle engine restarts the clock
    assert runtime.health().status == SERVING


def test_watchdog_off_when_the_timeout_is_zero() -> None:
    runtime = serving_runtime(stall_timeout=0)
    runtime.start("a")
    runtime.progress_at -= 3600
    assert runtime.health().status == SERVING
