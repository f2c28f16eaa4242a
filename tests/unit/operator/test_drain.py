"""A retired group is drained before it is deleted: it stops getting new requests, and goes once
the gateways report none in flight on its pods, or once the drain bound has passed since it was
retired (a time kept on its StatefulSet, so a restarted operator keeps it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleserve.operator.builders import Owner
from scaleserve.operator.decide import Decision, Delete, Retire, Serve, decide
from scaleserve.operator.layout import Group, GroupShape
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


def spec(length: int = 4096, **rollout: Any) -> EndpointSpec:
    return parse_spec(
        {
            "model": {"uri": "hf://org/m"},
            "engine": {"maxModelLen": length},
            "layout": {"replicas": 2, "tensorParallel": 8},
            "rollout": rollout,
        }
    )


def groups(retiring_since: str | None = None) -> tuple[EngineGroup, ...]:
    digest = pod_hash(spec(), OWNER, GroupShape(8, 8))
    return (
        EngineGroup(Group("g0-tp8", 8, 8), "n0", 1, 1, False, digest, retiring_since),
        EngineGroup(Group("g1-tp8", 8, 8), "n1", 1, 1, False, digest),
        EngineGroup(Group("g2-tp8", 8, 8), "n2", 1, 1, False, digest),
    )


def pods(g0_serving: bool = False) -> tuple[EnginePod, ...]:
    return (
        EnginePod("chat-g0-tp8-0", "g0-tp8", "10.0.0.1", g0_serving),
        EnginePod("chat-g1-tp8-0", "g1-tp8", "10.0.0.2", True),
        EnginePod("chat-g2-tp8-0", "g2-tp8", "10.0.0.3", True),
    )


def draining(load: dict[str, ReplicaLoad] | None, *, g0_serving: bool = False) -> Snapshot:
    """g0 retired at SINCE; g1 and g2 serve the 2x8 target."""
    status = {"phase": "Ready", "targetLayout": "2x8", "observedGeneration": 1}
    free = NodeFree([], [])
    return Snapshot(OWNER, 1, status, groups(SINCE), 1, free=free, pods=pods(g0_serving), load=load)


def at(seconds: float, snap: Snapshot, **rollout: Any) -> Decision:
    return decide(spec(**rollout), snap, NOW + timedelta(seconds=seconds))


def test_a_group_leaving_the_layout_is_retired_first_not_deleted() -> None:
    two = groups()[:2]
    status = {"phase": "Ready", "targetLayout": "2x8", "observedGeneration": 1}
    snap = Snapshot(OWNER, 2, status, two, 1, free=NodeFree([], []), pods=pods(True)[:2])
    decision = decide(spec(8192), snap, NOW)  # no spare GPUs: roll one group at a time
    assert decision.steps == (Retire(two[0].group, "chat-g0-tp8", SINCE),)
    assert decision.status["readyReplicas"] == 1  # a retired group serves no new requests
    assert [e.reason for e in decision.events] == ["GroupRetired"]


def test_a_retired_group_waits_while_requests_are_in_flight_then_is_deleted() -> None:
    busy = at(60, draining({"10.0.0.1": ReplicaLoad(3, False)}))
    assert not [s for s in busy.steps if isinstance(s, Delete)]
    assert "draining g0-tp8: 3 request(s) in flight (60s of 600s)" in busy.status["message"]
    drained = at(
        70, draining({"10.0.0.1": ReplicaLoad(0, False), "10.0.0.2": ReplicaLoad(5, True)})
    )
    assert drained.steps == (Delete(groups()[0].group, "chat-g0-tp8"),)
    assert [e.reason for e in drained.events] == ["GroupDeleted"]
    # Ready only once the deleted group is gone (the next pass sees it terminating)
    assert busy.status["phase"] == drained.status["phase"] == "Reshaping"
    # a gateway that closed its channel to the pod (no request left) no longer lists it
    assert at(70, draining({})).steps == drained.steps


@pytest.mark.parametrize(
    "load",
    [
        None,  # a gateway did not answer
        {"10.0.0.1": ReplicaLoad(0, True)},  # a gateway has not seen the pod leave yet
    ],
)
def test_a_retired_group_is_not_deleted_on_an_unknown_or_still_routed_zero(
    load: dict[str, ReplicaLoad] | None,
) -> None:
    decision = at(60, draining(load))
    assert not [s for s in decision.steps if isinstance(s, Delete)]
    assert "draining g0-tp8" in decision.status["message"]


def test_a_retired_group_is_deleted_at_the_bound_with_requests_still_in_flight() -> None:
    load = {"10.0.0.1": ReplicaLoad(2, False)}
    assert not [s for s in at(599, draining(load)).steps if isinstance(s, Delete)]
    late = at(600, draining(load))
    assert [type(s) for s in late.steps] == [Delete]
    assert [e.reason for e in late.events] == ["DrainTimedOut"]
    # the bound is the spec's
    assert [type(s) for s in at(120, draining(load), drainSeconds=120).steps] == [Delete]


def test_a_restarted_operator_keeps_the_retirement_time_from_the_statefulset() -> None:
    sts = {
        "metadata": {
            "name": "chat-g0-tp8",
            "generation": 1,
            "labels": {
                "scaleserve.io/group": "g0-tp8",
                "scaleserve.io/tensor-parallel": "8",
                "scaleserve.io/group-gpus": "8",
            },
            "annotations": {"scaleserve.io/retiring-since": SINCE},
        },
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1},
    }
    parsed = parse_group(sts)
    assert parsed is not None
    assert parsed.retiring_since == SINCE
    # nothing in memory, no status: the bound still counts from the annotation
    fresh = replace(
        draining(None), status={}, groups=(replace(parsed, pod_hash=groups()[1].pod_hash),)
    )
    assert not [s for s in at(599, fresh).steps if isinstance(s, Delete)]
    assert [type(s) for s in at(600, fresh).steps if isinstance(s, Delete)] == [Delete]


def test_a_retired_pod_that_got_the_label_back_is_retired_again_with_the_same_time() -> None:
    decision = at(30, draining({}, g0_serving=True))
    assert decision.steps == (Retire(groups()[0].group, "chat-g0-tp8", SINCE),)


def test_serving_pods_without_the_label_get_it_back() -> None:
    snap = replace(draining({}), pods=(*pods()[:2], replace(pods()[2], serving=False)))
    assert Serve(groups()[2].group) in at(0, snap).steps
