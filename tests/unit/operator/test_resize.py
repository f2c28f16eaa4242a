"""A group whose replica count alone changes is resized in place: a grow raises its replicas, a
shrink retires its highest ordinals and lowers the replicas once they are drained (or at the
bound)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleserve.operator.builders import Owner
from scaleserve.operator.builders.engine import engine_statefulset
from scaleserve.operator.decide import Decision, Resize, Shrink, decide
from scaleserve.operator.layout import Group, GroupShape
from scaleserve.operator.placement import NodeGPUs
from scaleserve.operator.rollout import pod_hash
from scaleserve.operator.snapshot import (
    EngineGroup,
    EnginePod,
    NodeFree,
    ReplicaLoad,
    Snapshot,
    parse_group,
)
from scaleserve.operator.spec import EndpointSpec, parse_spec
from scaleserve.operator.target import stamp

pytestmark = pytest.mark.unit

OWNER = Owner("chat", "ns", "uid")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SINCE = stamp(NOW)


def spec(replicas: int, tp: int = 1) -> EndpointSpec:
    return parse_spec(
        {"model": {"uri": "hf://org/m"}, "layout": {"replicas": replicas, "tensorParallel": tp}}
    )


def group(replicas: int, ready: int | None = None, shrink_to: int | None = None) -> EngineGroup:
    digest = pod_hash(spec(1), OWNER, GroupShape(replicas, 1))
    return EngineGroup(
        Group("g0-tp1", replicas, 1),
        "n0",
        replicas,
        replicas if ready is None else ready,
        False,
        digest,
        None,
        shrink_to,
        SINCE if shrink_to is not None else None,
    )


def snapshot(g: EngineGroup, free: int = 6, **more: Any) -> Snapshot:
    status = {"phase": "Ready", "observedGeneration": 1}
    nodes = NodeFree([NodeGPUs("n0", free)], [NodeGPUs("n0", free)])
    pods = tuple(
        EnginePod(f"chat-g0-tp1-{k}", "g0-tp1", f"10.0.0.{k}", True) for k in range(g.replicas)
    )
    return replace(Snapshot(OWNER, 1, status, (g,), 1, free=nodes, pods=pods), **more)


def test_the_pod_template_does_not_change_with_the_group_size() -> None:
    assert pod_hash(spec(1), OWNER, GroupShape(2, 1)) == pod_hash(spec(1), OWNER, GroupShape(3, 1))
    small, large = (engine_statefulset(spec(1), OWNER, Group("g0-tp1", n, 1), "n0") for n in (2, 3))
    assert small["spec"]["template"] == large["spec"]["template"]
    assert large["spec"]["replicas"] == 3


def test_one_more_replica_raises_the_statefulsets_replicas() -> None:
    decision = decide(spec(3), snapshot(group(2), apply_all=True), NOW)
    assert decision.steps == (Resize(Group("g0-tp1", 3, 1), "chat-g0-tp1"),)
    assert [e.reason for e in decision.events] == ["GroupResized"]
    assert "waiting for g0-tp1 to reach 3 ready replicas" in decision.status["message"]
    (sts,) = [w for w in decision.workloads if w["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    assert sts["metadata"]["labels"]["scaleserve.io/group-gpus"] == "3"


def test_a_grow_without_room_on_the_groups_node_is_make_before_break() -> None:
    snap = snapshot(group(2), free=0)
    snap = replace(snap, free=NodeFree([NodeGPUs("n1", 8)], []))
    decision = decide(spec(3), snap, NOW)
    assert [str(s) for s in decision.steps] == ["create g1-tp1"]


def test_a_shrink_retires_the_highest_ordinals_and_keeps_the_replicas() -> None:
    decision = decide(spec(1), snapshot(group(3)), NOW)
    assert decision.steps == (Shrink(Group("g0-tp1", 3, 1), "chat-g0-tp1", 1, SINCE),)
    assert [e.reason for e in decision.events] == ["ReplicasRetired"]


def _shrinking(load: dict[str, ReplicaLoad] | None, seconds: float) -> Decision:
    g = group(3, shrink_to=1)
    pods = (
        EnginePod("chat-g0-tp1-0", "g0-tp1", "10.0.0.0", True),
        EnginePod("chat-g0-tp1-1", "g0-tp1", "10.0.0.1", False),
        EnginePod("chat-g0-tp1-2", "g0-tp1", "10.0.0.2", False),
    )
    snap = snapshot(g, pods=pods, load=load)
    return decide(spec(1), snap, NOW + timedelta(seconds=seconds))


def test_a_shrink_waits_for_its_retired_replicas_then_lowers_the_replicas() -> None:
    busy = {"10.0.0.2": ReplicaLoad(2, False), "10.0.0.0": ReplicaLoad(5, True)}
    waiting = _shrinking(busy, 30)
    assert waiting.steps == ()
    assert (
        "draining replicas of g0-tp1: 2 request(s) in flight (30s of 600s)"
        in (waiting.status["message"])
    )
    assert waiting.status["phase"] == "Reshaping"
    # a shrinking group's StatefulSet is not re-applied at its new size meanwhile
    assert not [w for w in waiting.workloads if w["kind"] == "StatefulSet"]
    for load in (None, {"10.0.0.2": ReplicaLoad(0, True)}):  # unknown, or still routed
        assert _shrinking(load, 30).steps == ()
    drained = _shrinking({"10.0.0.2": ReplicaLoad(0, False)}, 40)
    assert drained.steps == (Resize(Group("g0-tp1", 1, 1), "chat-g0-tp1"),)
    assert [e.reason for e in drained.events] == ["GroupResized"]
    bound = _shrinking(busy, 600)
    assert bound.steps == (Resize(Group("g0-tp1", 1, 1), "chat-g0-tp1"),)
    assert [e.reason for e in bound.events] == ["DrainTimedOut"]


def test_a_retired_replica_that_got_the_label_back_is_retired_again() -> None:
    g = group(3, shrink_to=1)
    snap = snapshot(g, load={})  # every pod labelled, e.g. recreated by the StatefulSet
    decision = decide(spec(1), snap, NOW + timedelta(seconds=5))
    assert decision.steps == (Shrink(g.group, "chat-g0-tp1", 1, SINCE),)


def test_the_shrink_is_read_from_the_statefulsets_annotations() -> None:
    sts = engine_statefulset(spec(3), OWNER, Group("g0-tp1", 3, 1), "n0")
    sts["metadata"]["annotations"].update(
        {"scaleserve.io/shrink-to": "1", "scaleserve.io/shrink-since": SINCE}
    )
    sts["metadata"]["generation"] = 1
    sts["status"] = {"observedGeneration": 1, "readyReplicas": 3}
    parsed = parse_group(sts)
    assert parsed is not None
    assert (parsed.shrink_to, parsed.shrink_since, parsed.replicas) == (1, SINCE, 3)
    sts["spec"]["replicas"] = 1  # lowered: the shrink is done
    done = parse_group(sts)
    assert done is not None
    assert done.shrink_to is None
