"""The engine model against hand-computed cases, and the event queue's ordering."""

from __future__ import annotations

import pytest

from scaleserve.simulate.engine import Replica, Request
from scaleserve.simulate.events import EventQueue
from tests.fixtures.profiles import make_profile

pytestmark = pytest.mark.unit

# tp1: ttft 100 ms and tbt 10 ms at one request, 200/20 at two, 300/30 at three (linear)
PROFILE = make_profile({1: [(1, 100, 10), (3, 300, 30)]}, startup_s=20, kv_cache_tokens={1: 250})


def _replica(*, kv: bool = False, max_seqs: int = 1024) -> tuple[EventQueue, Replica, list]:
    degree = PROFILE.degree(1)
    assert degree is not None
    if not kv:
        degree = degree.model_copy(update={"kv_cache_tokens": None})
    events = EventQueue()
    done: list[Request] = []
    replica = Replica("r", degree, 100, events, lambda _t, r: done.append(r), max_seqs=max_seqs)
    return events, replica, done


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    events = EventQueue()
    seen: list[str] = []
    for at, name in [(2.0, "c"), (1.0, "a"), (2.0, "d"), (1.5, "b")]:
        events.schedule(at, lambda _t, n: seen.append(n), name)
    events.schedule(3.0, lambda t: events.schedule(t, lambda _t: seen.append("e")))
    events.run(10.0)
    assert seen == ["a", "b", "c", "d", "e"]
    assert events.now == 10.0
    with pytest.raises(ValueError, match="in the past"):
        events.schedule(9.0, lambda _t: None)


def test_events_after_the_horizon_wait_for_the_next_run() -> None:
    events = EventQueue()
    seen: list[float] = []
    events.schedule(5.0, lambda t: seen.append(t))
    events.run(4.0)
    assert seen == []
    assert len(events) == 1
    events.run(5.0)
    assert seen == [5.0]


def test_one_request_takes_ttft_then_one_tbt_per_further_token() -> None:
    events, replica, done = _replica()
    request = Request(0, 0.0, 100, 11)
    replica.submit(0.0, request)
    events.run(10.0)
    assert done == [request]
    assert request.ttft == pytest.approx(0.1)
    assert request.finish == pytest.approx(0.2)
    assert request.tbt == pytest.approx(0.01)


def test_prefill_time_grows_with_the_prompt() -> None:
    events, replica, _ = _replica()
    request = Request(0, 0.0, 200, 1)
    replica.submit(0.0, request)
    events.run(10.0)
    assert request.ttft == pytest.approx(0.2)
    assert request.finish == pytest.approx(0.2)


def test_decode_steps_take_the_tbt_of_the_batch_running_then() -> None:
    events, replica, _ = _replica()
    a, b = Request(0, 0.0, 100, 11), Request(1, 0.0, 100, 11)
    replica.submit(0.0, a)
    replica.submit(0.0, b)
    events.run(10.0)
    # a: admitted at batch 1 (first token 0.1), 5 steps of 20 ms to 0.2, 5 more to 0.3
    # b: admitted at batch 2 (first token 0.2), 5 steps of 20 ms to 0.3, 5 of 10 ms to 0.35
    assert a.first_token == pytest.approx(0.1)
    assert a.finish == pytest.approx(0.3)
    assert b.first_token == pytest.approx(0.2)
    assert b.finish == pytest.approx(0.35)
    assert replica.batch == replica.in_flight == replica.kv_used == 0
    assert replica.output_tokens == 22


@pytest.mark.parametrize(("kv", "max_seqs"), [(True, 1024), (False, 1)])
def test_kv_cache_or_max_seqs_bound_the_batch_and_the_rest_waits(kv: bool, max_seqs: int) -> None:
    events, replica, _ = _replica(kv=kv, max_seqs=max_seqs)
    # each reserves 100 + 100 tokens: two do not fit the 250-token cache
    a, b = Request(0, 0.0, 100, 100), Request(1, 0.0, 100, 100)
    replica.submit(0.0, a)
    replica.submit(0.0, b)
    events.run(0.5)
    assert replica.batch == 1
    assert list(replica.waiting) == [b]
    assert replica.in_flight == 2
    events.run(10.0)
    assert a.finish == pytest.approx(0.1 + 99 * 0.01)
    assert b.first_token == pytest.approx(a.finish + 0.1)
    assert b.finish == pytest.approx(a.finish + 0.1 + 99 * 0.01)


def test_abort_ends_every_held_request_with_the_reason() -> None:
    events, replica, done = _replica(max_seqs=2)
    held = [Request(i, 0.0, 100, 50) for i in range(4)]
    for request in held:
        replica.submit(0.0, request)
    events.run(0.15)  # one decoding, one prefilling, two waiting
    aborted = replica.abort_all(0.15, "stop")
    assert sorted(r.rid for r in aborted) == [0, 1, 2, 3]
    assert all(r.reason == "stop" for r in held)
    events.run(100.0)
    assert done == []
    assert replica.in_flight == 0
