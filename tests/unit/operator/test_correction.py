"""The online correction of the profile: a miss at a load the profile said is fine lowers that
degree's capacity below the load that missed, never below the floor; meeting the objectives
with margin raises it back slowly, monotonically and never above the profile; deterministic;
the policy with lowered capacities takes more GPUs for the same load; and decide reads the
beliefs back from the status, shows them, and grows the layout on a miss."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleserve.latency import DegreeLatency, Measured, bucket, histogram
from scaleserve.operator.correction import (
    FLOOR,
    MIN_REQUESTS,
    RECOVERY_STEP,
    Belief,
    applied,
    beliefs_of,
    correct,
)
from scaleserve.operator.decide import decide
from scaleserve.operator.layout import GroupShape
from scaleserve.operator.objectives import Objectives, choose
from scaleserve.operator.scaling import capacities
from tests.fixtures.profiles import make_profile
from tests.unit.operator.test_scaling import _settled, objectives_spec

pytestmark = pytest.mark.unit

# TP1: TBT 10 ms unloaded, 20 ms at 101 in flight: TBT 15 ms is met up to 51 in flight
PROFILE = make_profile(
    {1: [(1, 20, 10.0), (101, 60, 20.0)], 2: [(1, 15, 6.0), (101, 45, 16.0)]}, output_tokens=100
)
OBJECTIVES = Objectives(
    ttft_ms=None, tbt_ms=15.0, min_gpus=1, max_gpus=16, per_node=8, candidates=(2, 1)
)
PROFILED = 51.0  # TP1's capacity by the profile, requests in flight per replica


def report(tp: int, in_flight: float, tbt_ms: float, requests: int = 50) -> Measured:
    h = histogram(Counter({bucket(tbt_ms): requests}))
    ttft = histogram(Counter({bucket(30.0): requests}))
    return Measured(30.0, (DegreeLatency(tp, in_flight, ttft, h),))


def corrected(old: float, load: float, tbt_ms: float, replicas: int = 2) -> Belief:
    beliefs, _ = correct(
        OBJECTIVES, PROFILE, {1: Belief(1, old)}, report(1, load * replicas, tbt_ms), {1: replicas}
    )
    return beliefs[1]


@settings(max_examples=200, deadline=None)
@given(old=st.floats(FLOOR, 1.0), load=st.floats(0.1, 60.0), tbt=st.floats(15.5, 500.0))
def test_a_miss_within_the_believed_capacity_lowers_it_below_the_load_never_below_the_floor(
    old: float, load: float, tbt: float
) -> None:
    belief = corrected(old, load, tbt)
    assert FLOOR <= belief.correction <= old
    if load <= PROFILED * old:  # the belief said the objectives are met at this load
        assert PROFILED * belief.correction < load or belief.correction == FLOOR
        assert belief.source == "measured"
        assert "misses 15 ms" in belief.measurement
    else:  # a miss above the believed capacity is what the belief predicts
        assert belief.correction == old
    assert belief == corrected(old, load, tbt)  # deterministic


def test_reading_the_same_window_twice_does_not_lower_twice() -> None:
    once = corrected(1.0, 20.0, 30.0)
    assert corrected(once.correction, 20.0, 30.0).correction == once.correction


@settings(max_examples=100, deadline=None)
@given(start=st.floats(FLOOR, 1.0), passes=st.integers(1, 40))
def test_recovery_with_margin_is_monotone_slow_and_bounded_by_the_profile(
    start: float, passes: int
) -> None:
    factors = [start]
    for _ in range(passes):
        # 8 ms is within 80 % of 15 ms; each replica as busy as the belief allows
        load = PROFILED * factors[-1]
        factors.append(corrected(factors[-1], load, 8.0).correction)
    for a, b in itertools.pairwise(factors):
        assert a <= b <= min(1.0, a + RECOVERY_STEP + 1e-12)
    assert factors[-1] <= 1.0


def test_no_recovery_without_margin_or_at_a_light_load_or_from_too_few_requests() -> None:
    assert corrected(0.5, 20.0, 14.0).correction == 0.5  # met, but without margin
    assert corrected(0.5, 5.0, 8.0).correction == 0.5  # met with margin, nearly idle
    few = correct(OBJECTIVES, PROFILE, {1: Belief(1, 0.5)}, report(1, 40, 30, 5), {1: 2})
    assert few[0][1].correction == 0.5
    assert MIN_REQUESTS > 5


def test_beliefs_round_trip_through_the_status_and_degrees_without_data_keep_theirs() -> None:
    beliefs, lowered = correct(
        OBJECTIVES, PROFILE, {2: Belief(2, 0.4)}, report(1, 40.0, 30.0), {1: 2}
    )
    assert lowered
    assert "TP1" in lowered[0]
    assert beliefs[2].correction == 0.4  # not measured this pass
    status = {"objectives": {"capacities": capacities(OBJECTIVES, PROFILE, beliefs)}}
    back = beliefs_of(status)
    assert {tp: round(b.correction, 4) for tp, b in back.items()} == {
        tp: round(b.correction, 4) for tp, b in beliefs.items()
    }
    entry = next(e for e in status["objectives"]["capacities"] if e["tensorParallel"] == 1)
    assert entry["source"] == "measured"
    assert entry["inFlight"] < entry["profileInFlight"] == pytest.approx(PROFILED)
    assert entry["inFlight"] < 20.0  # below the load that missed
    assert (
        beliefs_of({"objectives": {"capacities": [{"tensorParallel": 1, "correction": -3}]}})[
            1
        ].correction
        == FLOOR
    )


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(1.0, 40.0), factor=st.floats(FLOOR, 1.0))
def test_lower_capacities_never_take_fewer_gpus_for_the_same_load(
    rate: float, factor: float
) -> None:
    plain = choose(OBJECTIVES, PROFILE, rate, ())
    lowered = applied(OBJECTIVES, {1: Belief(1, factor), 2: Belief(2, factor)})
    plan = choose(lowered, PROFILE, rate, ())
    if plain.meets:
        assert plan.gpus >= plain.gpus


def test_a_miss_takes_more_gpus_for_the_same_load() -> None:
    rate = 30.0
    before = choose(OBJECTIVES, PROFILE, rate, ())
    beliefs, _ = correct(OBJECTIVES, PROFILE, {}, report(1, 40.0, 40.0), {1: 2})
    after = choose(applied(OBJECTIVES, beliefs), PROFILE, rate, ())
    assert after.gpus > before.gpus


def test_decide_grows_the_layout_on_a_miss_and_shows_the_measured_capacity() -> None:
    spec = objectives_spec(objectives={"tbtP50Ms": 25}, tensorParallelCandidates=[1])
    ep = _settled((GroupShape(2, 1),), spec)
    # 2 x TP1 at 20 in flight each: the profile's TP1 carries about 54 within TBT 25 ms
    calm = decide(spec, ep.snapshot(40.0), ep.now)
    assert calm.status["targetLayout"] == "2x1"
    miss = report(1, 40.0, 40.0)
    decision = decide(spec, ep.snapshot(40.0, latency=miss), ep.now)
    assert decision == decide(spec, ep.snapshot(40.0, latency=miss), ep.now)
    target = decision.status["targetLayout"]
    assert target != "2x1"
    assert int(target.split("x")[0]) > 2
    (entry,) = decision.status["objectives"]["capacities"]
    assert entry["source"] == "measured"
    assert entry["inFlight"] < 20.0 < entry["profileInFlight"]
    assert "measured in flight per replica: TP1" in decision.status["objectives"]["reason"]
    assert [e.reason for e in decision.events][:1] == ["CapacityCorrected"]
    # a restarted operator reads the belief back from the status: no data, same choice
    ep.status = dict(decision.status)
    ep.status["targetLayout"] = "2x1"
    again = decide(spec, ep.snapshot(40.0), ep.now + timedelta(seconds=10))
    assert again.status["targetLayout"] == target
    assert again.status["objectives"]["capacities"][0]["source"] == "measured"


def test_a_window_that_straddles_a_reshape_is_not_measured() -> None:
    spec = objectives_spec(tensorParallelCandidates=[1])
    ep = _settled((GroupShape(2, 1),), spec)
    ep.status["lastReshapeCompletedTime"] = (ep.now - timedelta(seconds=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    ep.status["lastReshapeTime"] = ep.status["lastReshapeCompletedTime"]
    decision = decide(spec, ep.snapshot(40.0, latency=report(1, 40.0, 40.0)), ep.now)
    (entry,) = decision.status["objectives"]["capacities"]
    assert entry["source"] == "profile"
