"""The engine runtime's request bookkeeping (pure: no vLLM)."""

from __future__ import annotations

import pytest

from scaleserve.engine.lifecycle import Runtime

pytestmark = pytest.mark.unit


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
