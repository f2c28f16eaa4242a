"""decide in objectives mode: the target within minGPUs..maxGPUs from the profile, more load
never fewer GPUs, deterministic; the status says what each degree carries and why; scale to
zero after the idle time and back at once when the gateways hold requests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleserve.operator.builders import Owner
from scaleserve.operator.decide import Create, Decision, Delete, Resize, Retire, Shrink, decide
from scaleserve.operator.layout import Group, GroupShape, Window, describe
from scaleserve.operator.objectives import demand
from scaleserve.operator.placement import NodeGPUs
from scaleserve.operator.rollout import pod_hash
from scaleserve.operator.scaling import objectives_of, trend_seconds
from scaleserve.operator.snapshot import EngineGroup, NodeFree, Snapshot
from scaleserve.operator.spec import EndpointSpec, parse_spec
from scaleserve.profiles import parse_profile
from tests.fixtures.profiles import profile_document

pytestmark = pytest.mark.unit

OWNER = Owner("chat", "ns", "uid")
START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW_S, PASS_S = 30, 10
# wide replicas are fast but carry little per GPU; narrow ones are slower and carry more
DOCUMENT = profile_document(
    {
        8: [(1, 10, 2.0), (101, 30, 52.0)],
        4: [(1, 12, 3.0), (101, 36, 53.0)],
        2: [(1, 15, 5.0), (101, 45, 45.0)],
        1: [(1, 20, 9.0), (101, 60, 39.0)],
    },
    output_tokens=100,
)
FREE = NodeFree([NodeGPUs(f"n{i}", 8) for i in range(8)], [NodeGPUs(f"n{i}", 8) for i in range(8)])


def objectives_spec(**autoscaling: Any) -> EndpointSpec:
    return parse_spec(
        {
            "model": {"uri": "hf://org/m"},
            "autoscaling": {
                "mode": "objectives",
                "objectives": {"tbtP50Ms": 25},
                "minGPUs": 1,
                "maxGPUs": 16,
                "tensorParallelCandidates": [8, 4, 2, 1],
                "profile": {"inline": DOCUMENT},
                "windowSeconds": WINDOW_S,
                "cooldownSeconds": 60,
                "surgeGPUs": 8,
                **autoscaling,
            },
        }
    )


class Endpoint:
    """decide's passes against groups that become ready at once and go when retired."""

    def __init__(self, spec: EndpointSpec) -> None:
        assert spec.autoscaling is not None
        self.spec, self.now = spec, START
        self.groups: dict[str, EngineGroup] = {}
        self.status: dict[str, Any] = {}
        self.profile = spec.autoscaling.profile
        self.samples = 0

    def snapshot(self, load: float, held: int = 0, **changes: Any) -> Snapshot:
        span = self.samples * PASS_S
        snap = Snapshot(
            OWNER,
            1,
            dict(self.status),
            tuple(self.groups.values()),
            gateways_ready=1,
            free=FREE,
            window=Window(load, float(span), self.samples),
            profile=parse_profile(DOCUMENT),
            held=held,
        )
        return replace(snap, **changes)

    def step(self, load: float, held: int = 0) -> Decision:
        self.samples += 1
        decision = decide(self.spec, self.snapshot(load, held), self.now)
        for s in decision.steps:
            if isinstance(s, Create):
                digest = pod_hash(self.spec, OWNER, s.group.shape)
                self.groups[s.group.name] = EngineGroup(
                    s.group, s.node, s.group.replicas, s.group.replicas, False, digest
                )
            elif isinstance(s, Retire | Delete):
                self.groups.pop(s.group.name, None)
            elif isinstance(s, Shrink | Resize):  # drained at once
                old = self.groups[s.group.name]
                size = s.replicas if isinstance(s, Shrink) else s.group.replicas
                group = Group(s.group.name, size * s.group.tensor_parallel, s.group.tensor_parallel)
                self.groups[s.group.name] = replace(old, group=group, replicas=size, ready=size)
        self.status = dict(decision.status)
        self.now += timedelta(seconds=PASS_S)
        return decision

    def settle(self, load: float, passes: int = 40) -> list[Decision]:
        return [self.step(load) for _ in range(passes)]

    @property
    def gpus(self) -> int:
        return sum(g.group.size for g in self.groups.values())


def test_light_load_takes_few_gpus_heavy_load_more_within_the_bounds() -> None:
    ep = Endpoint(objectives_spec())
    ep.settle(0.5)
    light = ep.gpus
    assert 1 <= light < 16
    assert ep.status["mode"] == "objectives"
    assert ep.status["gpuUsage"] == f"{light}/16"
    assert ep.status["objectives"]["state"] == "Met"
    degrees = {c["tensorParallel"] for c in ep.status["objectives"]["capacities"]}
    assert degrees == {8, 4, 2, 1}
    ep.settle(2000.0)
    assert light < ep.gpus <= 16
    # nothing within maxGPUs carries this: the most capacity, and the status says so
    assert ep.status["objectives"]["state"] == "Unmet"
    assert "short of" in ep.status["objectives"]["reason"]
    assert ep.status["phase"] == "Ready"


def test_the_first_layout_comes_from_the_profile_before_any_sample() -> None:
    ep = Endpoint(objectives_spec(minGPUs=4))
    decision = ep.step(0.0)
    assert ep.status["objectives"]["state"] == "Starting"
    assert sum(s.group.size for s in decision.steps if isinstance(s, Create)) >= 4


LAYOUTS = [
    (GroupShape(8, 8),),
    (GroupShape(8, 1),),
    (GroupShape(4, 4), GroupShape(4, 1)),
    (GroupShape(8, 8), GroupShape(8, 8)),
    (GroupShape(2, 2),),
]


def _settled(shapes: tuple[GroupShape, ...], spec: EndpointSpec) -> Endpoint:
    """An endpoint at `shapes`, its window full and the cooldown long over."""
    ep = Endpoint(spec)
    for i, shape in enumerate(shapes):
        group = Group(f"g{i}-tp{shape.tensor_parallel}", shape.size, shape.tensor_parallel)
        digest = pod_hash(spec, OWNER, shape)
        ep.groups[group.name] = EngineGroup(
            group, f"n{i}", group.replicas, group.replicas, False, digest
        )
    ep.samples = 10
    ep.status = {
        "targetLayout": describe(shapes),
        "lastReshapeTime": "2025-12-31T00:00:00Z",
        "lastReshapeCompletedTime": "2025-12-31T00:01:00Z",
    }
    return ep


@settings(max_examples=60, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    loads=st.tuples(st.floats(0.01, 500), st.floats(0.01, 500)).map(sorted),
    least=st.sampled_from([0, 1, 4, 8]),
    most=st.sampled_from([8, 16]),
)
def test_one_pass_stays_within_the_bounds_more_load_never_fewer_gpus_and_is_deterministic(
    layout: tuple[GroupShape, ...], loads: list[float], least: int, most: int
) -> None:
    spec = objectives_spec(minGPUs=least, maxGPUs=most)
    targets, rates = [], []
    for load in loads:
        ep = _settled(layout, spec)
        snap = ep.snapshot(load)
        decision = decide(spec, snap, ep.now)
        assert decision == decide(spec, snap, ep.now)
        gpus = sum(s.size for s in _shapes(decision))
        assert max(1, least) <= gpus <= most or _shapes(decision) == layout
        targets.append(gpus)
        rates.append(demand(objectives_of(spec), parse_profile(DOCUMENT), layout, load))
    # within the hysteresis margin a layout may be kept or left either way; beyond it, more
    # load never takes fewer GPUs
    if rates[1] >= rates[0] / (1 - 0.1):
        assert targets[0] <= targets[1]


def _shapes(decision: Decision) -> tuple[GroupShape, ...]:
    from scaleserve.operator.scaling import parse_groups

    shapes = parse_groups(decision.status["targetLayout"], 8)
    assert shapes is not None
    return shapes


def test_scale_to_zero_after_the_idle_time_and_back_at_once_when_requests_are_held() -> None:
    ep = Endpoint(objectives_spec(minGPUs=0, scaleToZeroAfterSeconds=60, cooldownSeconds=600))
    ep.settle(2.0, passes=5)
    assert ep.gpus > 0
    idle = ep.settle(0.0, passes=5)
    assert ep.gpus > 0  # 50 s without load: not yet
    assert ep.status["idleSince"]
    idle += ep.settle(0.0, passes=3)
    assert ep.gpus == 0
    assert any(e.reason == "ScaleToZero" for d in idle for e in d.events)
    assert ep.status["phase"] == "Idle"
    assert ep.status["targetLayout"] == "0"
    assert ep.status["objectives"]["state"] == "ScaledToZero"
    ep.settle(0.0, passes=3)
    assert ep.gpus == 0
    # the gateways hold a request: the first group comes at once, no window, no cooldown
    back = ep.step(0.0, held=1)
    assert [type(s) for s in back.steps] == [Create]
    assert [e.reason for e in back.events if e.reason == "ScaleFromZero"] == ["ScaleFromZero"]
    assert ep.gpus > 0


def test_load_resets_the_idle_clock() -> None:
    ep = Endpoint(objectives_spec(minGPUs=0, scaleToZeroAfterSeconds=60))
    ep.settle(2.0, passes=5)
    ep.settle(0.0, passes=4)
    ep.step(0.5)
    assert ep.status.get("idleSince") is None
    ep.settle(0.0, passes=4)
    assert ep.gpus > 0


def test_minimum_above_zero_never_scales_to_zero() -> None:
    ep = Endpoint(objectives_spec(minGPUs=1))
    ep.settle(0.0, passes=100)
    assert ep.gpus >= 1


def test_an_unusable_profile_degrades_the_endpoint_naming_the_field_and_keeps_the_layout() -> None:
    ep = Endpoint(objectives_spec())
    ep.settle(2.0, passes=5)
    before = dict(ep.groups)
    why = "ConfigMap chat-profile key profile.yaml: tensorParallel.0.points.0.ttftMs: bad"
    decision = decide(
        ep.spec, ep.snapshot(50.0, profile=None, profile_error=why), ep.now + timedelta(hours=1)
    )
    assert decision.steps == ()
    assert decision.status["phase"] == "Degraded"
    assert "tensorParallel.0.points.0.ttftMs" in decision.status["message"]
    assert decision.status["objectives"]["state"] == "NoProfile"
    assert [e.reason for e in decision.events] == ["Degraded"]
    assert ep.groups == before


def test_p99_objectives_need_the_profiles_p99s() -> None:
    from scaleserve.operator.scaling import check_profile
    from scaleserve.profiles import ProfileError, parse_profile

    spec = objectives_spec(objectives={"ttftP99Ms": 100})
    with pytest.raises(ProfileError, match=r"tensorParallel\.0\.points\.0\.ttftP99Ms"):
        check_profile(spec, parse_profile(DOCUMENT))


def test_a_held_reshape_follows_the_load_back() -> None:
    spec = objectives_spec()
    ep = _settled((GroupShape(1, 1),), spec)
    none = NodeFree([], [])
    up = decide(spec, ep.snapshot(2000.0, free=none), ep.now)
    assert up.status["targetLayout"] != "1x1"
    assert any(c["type"] == "Held" and c["status"] == "True" for c in up.status["conditions"])
    ep.status = dict(up.status)
    back = decide(spec, ep.snapshot(0.5, free=none), ep.now + timedelta(seconds=10))
    assert back.status["targetLayout"] == "1x1"
    assert [e.reason for e in back.events] == ["ReshapeCancelled"]
    assert not any(c["type"] == "Held" and c["status"] == "True" for c in back.status["conditions"])


def test_leaving_objectives_mode_removes_its_status_fields() -> None:
    ep = Endpoint(objectives_spec())
    ep.settle(0.5, passes=5)
    thresholds = parse_spec({"model": {"uri": "hf://org/m"}, "autoscaling": {"gpuBudget": 8}})
    decision = decide(thresholds, ep.snapshot(0.5), ep.now)
    assert decision.status["mode"] == "thresholds"
    assert decision.status["objectives"] is None
    assert decision.status["gpuBounds"] is None


def _rising(ep: Endpoint, load: float, trend: float) -> Decision:
    window = Window(load, float(ep.samples * PASS_S), ep.samples, trend)
    return decide(ep.spec, ep.snapshot(load, window=window), ep.now)


def test_a_rising_load_steps_up_ahead_and_a_falling_one_is_sized_as_observed() -> None:
    spec = objectives_spec()
    shapes = (GroupShape(2, 1),)
    flat = _shapes(_rising(_settled(shapes, spec), 40.0, 0.0))
    assert flat == shapes  # 40 in flight on 2 x TP1: within the objectives
    rising = _rising(_settled(shapes, spec), 40.0, 1.0)
    assert sum(s.size for s in _shapes(rising)) > 2
    facts = rising.status["objectives"]
    assert facts["expectedRequestsPerSecond"] > facts["requestsPerSecond"]
    assert "expected ahead" in facts["reason"]
    assert any(e.reason == "ReshapeStarted" for e in rising.events)
    falling = _rising(_settled(shapes, spec), 40.0, -1.0)
    assert _shapes(falling) == shapes
    assert "expectedRequestsPerSecond" not in falling.status["objectives"]
    # scaleUpLookaheadSeconds 0: the load observed, rising or not
    off = objectives_spec(scaleUpLookaheadSeconds=0)
    assert _shapes(_rising(_settled(shapes, off), 40.0, 1.0)) == shapes


def test_the_trend_is_read_over_one_lookahead() -> None:
    profile = parse_profile(DOCUMENT)  # every degree starts in 60 s
    assert trend_seconds(objectives_spec(), profile) == 120.0
    assert trend_seconds(objectives_spec(scaleUpLookaheadSeconds=45), profile) == 45.0
    assert trend_seconds(objectives_spec(), None) == 0.0
    thresholds = parse_spec({"model": {"uri": "hf://org/m"}, "autoscaling": {"gpuBudget": 8}})
    assert trend_seconds(thresholds, profile) == 0.0
