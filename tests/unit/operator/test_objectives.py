"""The objectives policy: fewest GPUs meeting the objectives, bounds, monotonic in load,
hysteresis, the most capacity when nothing meets them, and sizing a rising load ahead."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleserve.operator.layout import GroupShape
from scaleserve.operator.objectives import (
    Objectives,
    Plan,
    choose,
    demand,
    expected,
    expected_in_flight,
    lookahead_seconds,
    rate_capacity,
    startup_seconds,
)
from scaleserve.profiles import Profile, parse_profile
from tests.fixtures.profiles import make_profile

pytestmark = pytest.mark.unit

CANDIDATES = (8, 4, 2, 1)


def profile_of(curves: dict[int, tuple[float, float, float]]):
    """tp -> (tbt at 1 request, tbt slope per request, ttft) as a two-point profile."""
    points = {
        tp: [(1, ttft, tbt), (101, ttft * 3, tbt + 100 * slope)]
        for tp, (tbt, slope, ttft) in curves.items()
    }
    return make_profile(points, output_tokens=100)


# Wide replicas are fast but carry little per GPU; narrow ones are slower and carry more.
PROFILE = profile_of(
    {8: (2.0, 0.5, 10.0), 4: (3.0, 0.5, 12.0), 2: (5.0, 0.4, 15.0), 1: (9.0, 0.3, 20.0)}
)


def objectives(**overrides) -> Objectives:
    base = {"ttft_ms": None, "tbt_ms": 25.0, "min_gpus": 0, "max_gpus": 8, "per_node": 8}
    return Objectives(candidates=CANDIDATES, **{**base, **overrides})


def gpus(plan: Plan) -> int:
    return sum(s.size for s in plan.shapes)


def test_fewest_gpus_win_and_tight_objectives_need_wide_replicas() -> None:
    # at TBT <= 25 ms one TP1 replica completes ~21.6 requests/s, one TP8 replica ~18.8
    assert choose(objectives(tbt_ms=25), PROFILE, 10, ()).shapes == (GroupShape(1, 1),)
    tight = choose(objectives(tbt_ms=2.9), PROFILE, 0.5, ())
    assert tight.meets
    assert tight.shapes == (GroupShape(8, 8),)
    heavy = choose(objectives(tbt_ms=25), PROFILE, 100, ())
    assert heavy.meets
    assert {s.tensor_parallel for s in heavy.shapes} == {1}


def test_capacity_is_a_request_rate_by_littles_law() -> None:
    degree = PROFILE.degree(1)
    assert degree is not None
    rate, in_flight = rate_capacity(PROFILE, degree, None, 25.0)
    # TBT 9 + 0.3 (c - 1) ms reaches 25 ms at c = 54.33; a request then takes
    # TTFT (20 ms + 40 ms x 53.33 / 100) + 99 x 25 ms = 2.5163 s
    assert in_flight == pytest.approx(54.333, abs=1e-3)
    assert rate == pytest.approx(54.333 / 2.5163, rel=1e-3)


def test_demand_converts_in_flight_on_the_current_layout_to_a_rate() -> None:
    obj = objectives()
    # 2 TP1 replicas with 10 requests each: 10 / (20.36 ms + 99 x 11.7 ms) per replica
    seconds = (20 + 40 * 9 / 100 + 99 * (9 + 0.3 * 9)) / 1000
    assert demand(obj, PROFILE, (GroupShape(2, 1),), 20) == pytest.approx(20 / seconds)
    # the same requests on a slower layout mean a lower rate
    assert demand(obj, PROFILE, (GroupShape(8, 8),), 20) > demand(
        obj, PROFILE, (GroupShape(2, 1),), 20
    )
    assert demand(obj, PROFILE, (), 0) == 0
    assert demand(obj, PROFILE, (), 4) > 0


def test_zero_load_with_min_gpus_zero_releases_every_gpu() -> None:
    plan = choose(objectives(min_gpus=0), PROFILE, 0, (GroupShape(8, 8),))
    assert plan.shapes == ()
    assert plan.meets


def test_no_layout_meeting_the_objectives_takes_the_most_capacity_and_says_so() -> None:
    plan = choose(objectives(max_gpus=8), PROFILE, 1_000, ())
    assert not plan.meets
    assert gpus(plan) == 8
    assert "most capacity" in plan.reason
    unreachable = choose(objectives(tbt_ms=1.0), PROFILE, 1, ())
    assert not unreachable.meets
    assert "even unloaded" in unreachable.reason


def test_hysteresis_shrinks_only_with_headroom_and_holds_in_between() -> None:
    obj = objectives(max_gpus=16, per_node=8, hysteresis=0.5)
    big = choose(obj, PROFILE, 150, ())
    held = 0
    for load in range(0, 150, 2):
        plan = choose(obj, PROFILE, load, big.shapes)
        if plan.shapes != big.shapes:
            assert gpus(plan) < gpus(big)
            assert plan.capacity * (1 - obj.hysteresis) >= load
        elif gpus(choose(obj, PROFILE, load, ())) < gpus(big):
            held += 1  # a smaller layout carries this load, but without the headroom
    assert held > 0


def _all_mixes(max_gpus: int) -> list[tuple[int, ...]]:
    ranges = [range(max_gpus // tp + 1) for tp in CANDIDATES]
    return [
        m
        for m in itertools.product(*ranges)
        if sum(r * tp for r, tp in zip(m, CANDIDATES, strict=True)) <= max_gpus
    ]


profiles = st.fixed_dictionaries(
    {tp: st.tuples(st.floats(1, 20), st.floats(0.01, 1.0), st.floats(5, 200)) for tp in CANDIDATES}
).map(profile_of)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    profile=profiles,
    load=st.floats(0, 400).map(lambda x: round(x, 3)),
    nodes=st.integers(1, 3),
    min_nodes=st.integers(0, 3),
    tbt=st.floats(5, 80),
)
def test_properties_bounds_best_effort_and_determinism(
    profile, load, nodes, min_nodes, tbt
) -> None:
    obj = objectives(tbt_ms=tbt, max_gpus=8 * nodes, min_gpus=8 * min(min_nodes, nodes))
    plan = choose(obj, profile, load, ())
    assert obj.min_gpus <= gpus(plan) <= obj.max_gpus
    assert plan == choose(obj, profile, load, ())
    # it meets the objectives whenever any layout within maxGPUs does (brute force)
    caps = {tp: rate_capacity(profile, profile.degree(tp), None, tbt)[0] for tp in CANDIDATES}
    best = max(
        sum(r * caps[tp] for r, tp in zip(m, CANDIDATES, strict=True))
        for m in _all_mixes(obj.max_gpus)
    )
    if best >= load - 1e-6 and any(caps.values()):
        assert plan.meets
        assert plan.capacity >= load - 1e-6
        # and with the fewest GPUs among the layouts that do
        fewest = min(
            sum(r * tp for r, tp in zip(m, CANDIDATES, strict=True))
            for m in _all_mixes(obj.max_gpus)
            if sum(r * caps[tp] for r, tp in zip(m, CANDIDATES, strict=True)) >= load - 1e-6
        )
        assert gpus(plan) == max(fewest, obj.min_gpus)
    else:
        assert not plan.meets


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    profile=profiles,
    loads=st.lists(st.floats(0, 400), min_size=2, max_size=2),
    nodes=st.integers(1, 3),
)
def test_more_load_never_yields_fewer_gpus(profile, loads, nodes) -> None:
    obj = objectives(max_gpus=8 * nodes)
    low, high = sorted(loads)
    assert gpus(choose(obj, profile, low, ())) <= gpus(choose(obj, profile, high, ()))


def _reference(name: str) -> Profile:
    return parse_profile((Path(__file__).parents[3] / "profiles" / name).read_text())


@settings(max_examples=150, deadline=None)
@given(
    layout=st.sampled_from([(GroupShape(8, 8),), (GroupShape(8, 2),), (GroupShape(8, 1),)]),
    loads=st.tuples(st.floats(1, 4000), st.floats(1, 4000)).map(sorted),
)
def test_more_sustained_in_flight_never_takes_fewer_gpus_even_past_a_profiles_knee(
    layout: tuple[GroupShape, ...], loads: list[float]
) -> None:
    # the 8B H200 estimate: a TP2 replica completes fewer requests/s above 512 in flight than
    # at 512 (its latency grows faster than its load there)
    profile = _reference("llama-3.1-8b.h200_sxm.yaml")
    obj = Objectives(
        ttft_ms=None, tbt_ms=60.0, min_gpus=1, max_gpus=8, per_node=8, candidates=CANDIDATES
    )
    low, high = (demand(obj, profile, layout, load) for load in loads)
    assert low <= high * (1 + 1e-9)
    fresh = [gpus(choose(obj, profile, rate, ())) for rate in (low, high)]
    assert fresh[0] <= fresh[1]
    kept = [gpus(choose(obj, profile, rate, layout)) for rate in (low, high)]
    if high >= low / (1 - obj.hysteresis):
        assert kept[0] <= kept[1]


def test_expected_load_rises_with_the_trend_and_never_falls_below_the_measured_load() -> None:
    assert expected_in_flight(40.0, 0.5, 200.0) == pytest.approx(140.0)
    assert expected_in_flight(40.0, -0.5, 200.0) == 40.0
    assert expected_in_flight(40.0, 0.0, 200.0) == 40.0


def test_the_lookahead_is_two_start_ups_of_the_slowest_degree_asked() -> None:
    profile = make_profile({1: [(1, 20, 9)], 8: [(1, 10, 2)]}, startup_s={1: 200.0, 8: 90.0})
    assert startup_seconds(profile, (8, 1)) == 200.0
    assert startup_seconds(profile, (8,)) == 90.0
    assert startup_seconds(profile, ()) == 0.0
    assert lookahead_seconds(profile, (8, 1)) == 400.0


def test_a_rising_load_is_sized_ahead_by_a_start_up_and_a_falling_one_is_not() -> None:
    obj = objectives(min_gpus=1)
    now = (GroupShape(2, 1),)
    flat_rate, flat_ahead, flat = expected(obj, PROFILE, now, 60.0, 0.0, 30.0)
    assert flat_ahead == flat_rate
    rate, ahead, up = expected(obj, PROFILE, now, 60.0, 0.5, 30.0)
    assert rate == flat_rate
    # two of the profile's 60 s start-ups plus the window's 30 s lag at 0.5 per second: 75 more
    assert ahead == pytest.approx(demand(obj, PROFILE, now, 60.0 + 0.5 * 150.0))
    assert gpus(up) > gpus(flat)
    assert "carrying" in up.reason
    # on the way down the measured load sizes the layout, never less
    down_rate, down_ahead, down = expected(obj, PROFILE, now, 60.0, -1.0, 30.0)
    assert (down_rate, down_ahead, down.shapes) == (flat_rate, flat_rate, flat.shapes)
    # lookahead 0: no headroom at all
    off = expected(objectives(min_gpus=1, lookahead_s=0.0), PROFILE, now, 60.0, 1.0, 30.0)
    assert off[1] == flat_rate
    # a configured lookahead replaces the profile's start-up
    _, fixed, _ = expected(objectives(min_gpus=1, lookahead_s=10.0), PROFILE, now, 60, 0.2, 30)
    assert fixed == pytest.approx(demand(obj, PROFILE, now, 60.0 + 0.2 * 40.0))


def test_the_lookahead_is_the_start_up_of_the_degrees_the_step_starts() -> None:
    # TP8 starts slowly and TP1 quickly; a step to more TP1 replicas looks ahead TP1's start-up
    slow_wide = make_profile(
        {8: [(1, 10, 2), (101, 30, 52)], 1: [(1, 20, 9), (101, 60, 39)]},
        output_tokens=100,
        startup_s={8: 600.0, 1: 100.0},
    )
    obj = objectives(min_gpus=1)
    now = (GroupShape(2, 1),)
    _, ahead, plan = expected(obj, slow_wide, now, 60.0, 0.1, 0.0)
    assert {s.tensor_parallel for s in plan.shapes} == {1}
    assert ahead == pytest.approx(demand(obj, slow_wide, now, 60.0 + 0.1 * 2 * 100.0))
