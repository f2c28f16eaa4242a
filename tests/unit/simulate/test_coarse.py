"""The coarse engine model: steady state from the profile, and the operator's invariants."""

from __future__ import annotations

import pytest

from scaleserve.operator.spec import parse_spec
from scaleserve.profiles import Profile
from scaleserve.simulate.coarse import Curve, act, endpoint_for, serve
from scaleserve.simulate.compare import Setup
from scaleserve.simulate.control import ThresholdsControl
from scaleserve.simulate.nodes import Nodes
from tests.fixtures.profiles import make_profile

pytestmark = pytest.mark.unit


def _profile(busy_ttft_ms: float, busy_tbt_ms: float, busy: int = 3) -> Profile:
    """TP1 and TP8 (eight times faster) from one request to `busy` in flight."""
    return make_profile(
        {tp: [(1, 100 / tp, 10 / tp), (busy, busy_ttft_ms / tp, busy_tbt_ms / tp)] for tp in (1, 8)}
    )


# latency(c) = c x (0.1 + 10 x 0.01) s on TP1: throughput 5 req/s at any concurrency
FLAT = _profile(300, 30)
# throughput grows with concurrency, as on a GPU
SCALING = _profile(400, 20, busy=64)


def test_a_replica_runs_at_the_concurrency_littles_law_gives() -> None:
    degree = FLAT.degree(1)
    assert degree is not None
    curve = Curve.of(degree, output_tokens=11, max_seqs=3)
    assert curve.throughput == pytest.approx((5.0, 5.0, 5.0))
    c, served, ttft, tbt = curve.at(2.5)
    assert (c, served, ttft, tbt) == pytest.approx((0.5, 2.5, 0.1, 0.01))
    _, served, *_ = curve.at(50.0)
    assert served == pytest.approx(5.0)  # the rest waits


def test_many_endpoints_keep_budget_never_go_dark_and_finish_their_reshapes() -> None:
    spec = parse_spec(Setup(thresholds=(20.0,), window_s=30, cooldown_s=60).spec())
    nodes = Nodes(5 * 16, 8)  # room for every endpoint's surge at once
    endpoints = [endpoint_for(ThresholdsControl(spec), SCALING, nodes) for _ in range(5)]
    reshapes = 0
    for k in range(360):  # an hour of 10 s passes, load up for the middle half hour
        now = (k + 1) * 10.0
        rate = 800.0 if 900 <= now < 2700 else 2.0
        for i, e in enumerate(endpoints):
            result = serve(e, now, rate * (i + 1) / 5, 10.0)
            reshapes += act(e, now, result)
            assert e.gpus() <= 16
    assert reshapes >= 4  # up and back down for the busier endpoints
    for e in endpoints:
        assert e.dark_passes == 0
        assert not e.control.reshape_unfinished
        assert e.gpus() == 8
