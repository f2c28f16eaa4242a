"""decide on hand-built snapshots: spec edits roll groups make-before-break, a single group
without spare GPUs holds, refused children degrade the endpoint; the back-off of retries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleserve.operator.builders import Owner
from scaleserve.operator.decide import Create, Retire, decide, rejected
from scaleserve.operator.layout import Group, GroupShape, Window
from scaleserve.operator.placement import NodeGPUs
from scaleserve.operator.rollout import pod_hash
from scaleserve.operator.runtime import RETRY_MAX_S, backoff_s
from scaleserve.operator.snapshot import EngineGroup, NodeFree, Snapshot
from scaleserve.operator.spec import EndpointSpec, parse_spec

pytestmark = pytest.mark.unit

OWNER = Owner("chat", "ns", "uid")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(replicas: int, length: int = 4096, **extra: Any) -> EndpointSpec:
    return parse_spec(
        {
            "model": {"uri": "hf://org/m"},
            "engine": {"maxModelLen": length},
            "layout": {"replicas": replicas, "tensorParallel": 8},
            **extra,
        }
    )


def ready_groups(count: int, old: EndpointSpec) -> tuple[EngineGroup, ...]:
    shape = GroupShape(8, 8)
    digest = pod_hash(old, OWNER, shape)
    return tuple(
        EngineGroup(Group(f"g{i}-tp8", 8, 8), f"n{i}", 1, 1, False, digest) for i in range(count)
    )


def snapshot(groups: tuple[EngineGroup, ...], free: list[NodeGPUs]) -> Snapshot:
    status = {"phase": "Ready", "targetLayout": f"{len(groups)}x8", "observedGeneration": 1}
    return Snapshot(OWNER, 2, status, groups, gateways_ready=1, free=NodeFree(free, free))


def test_a_spec_edit_creates_a_new_group_before_deleting_an_old_one() -> None:
    groups = ready_groups(2, spec(2))
    decision = decide(spec(2, 8192), snapshot(groups, [NodeGPUs("n2", 8)]), NOW)
    assert [type(s) for s in decision.steps] == [Create]
    created = decision.steps[0]
    assert isinstance(created, Create)
    assert created.node == "n2"
    assert created.manifest["metadata"]["annotations"]["scaleserve.io/pod-spec-hash"] == (
        pod_hash(spec(2, 8192), OWNER, GroupShape(8, 8))
    )
    # the old groups' StatefulSets are not re-applied: their pods are never rolled in place
    assert not [m for m in decision.workloads if m["kind"] == "StatefulSet"]
    assert decision.status["readyReplicas"] == 2


def test_two_groups_without_spare_gpus_roll_one_at_a_time_and_keep_serving() -> None:
    groups = ready_groups(2, spec(2))
    decision = decide(spec(2, 8192), snapshot(groups, []), NOW)
    assert [type(s) for s in decision.steps] == [Retire]
    assert decision.status["readyReplicas"] == 1
    assert not any(
        c["type"] == "Held" and c["status"] == "True" for c in decision.status["conditions"]
    )


def test_a_single_group_without_spare_gpus_holds_and_says_why() -> None:
    groups = ready_groups(1, spec(1))
    decision = decide(spec(1, 8192), snapshot(groups, []), NOW)
    assert decision.steps == ()
    message = decision.status["message"]
    assert message.startswith("holding 1x8: replacing it with the current spec needs 8 spare GPUs")
    assert decision.status["phase"] == "Ready"
    held = next(c for c in decision.status["conditions"] if c["type"] == "Held")
    assert (held["status"], held["reason"]) == ("True", "NoSpareGPUs")
    assert [e.reason for e in decision.events] == ["RolloutHeld"]


def test_a_single_group_is_replaced_with_downtime_only_when_opted_in() -> None:
    groups = ready_groups(1, spec(1))
    opted = spec(1, 8192, rollout={"allowDisruption": True})
    decision = decide(opted, snapshot(groups, []), NOW)
    assert [type(s) for s in decision.steps] == [Retire]
    assert "NoSpareGPUs" in [e.reason for e in decision.events]


def test_an_unchanged_endpoint_needs_no_placement_and_no_steps() -> None:
    groups = ready_groups(1, spec(1))
    settled = Snapshot(OWNER, 1, {"observedGeneration": 1}, groups, gateways_ready=1)
    decision = decide(spec(1), settled, NOW)
    assert not decision.needs_free_gpus
    assert decision.steps == ()
    assert decision.config == ()  # nothing to re-apply until the resync is due
    assert decision.status["phase"] == "Ready"


def test_a_refused_child_degrades_the_endpoint_quoting_the_server() -> None:
    groups = ready_groups(1, spec(1))
    snap = Snapshot(OWNER, 1, {"phase": "Ready"}, groups, gateways_ready=1)
    why = 'Deployment.apps "chat-gateway" is invalid: spec.template.spec.nodeSelector'
    decision = rejected(spec(1), snap, {"Deployment/chat-gateway": why}, NOW)
    assert decision.status["phase"] == "Degraded"
    degraded = next(c for c in decision.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolloutRejected"
    assert f"Deployment/chat-gateway: {why}" in degraded["message"]
    warnings = [e for e in decision.events if e.reason == "Degraded"]
    assert warnings
    assert why in warnings[0].message
    assert decision.config == decision.workloads == ()


def test_retries_back_off_exponentially_with_jitter_up_to_five_minutes() -> None:
    assert backoff_s(1, 1.0) == 5.0
    assert backoff_s(3, 1.0) == 20.0
    assert 16.0 <= backoff_s(3, 0.8) < backoff_s(3, 1.2) <= 24.0
    assert backoff_s(20, 1.2) == RETRY_MAX_S == 300.0


def test_every_child_is_reapplied_within_one_resync_period() -> None:
    from scaleserve.operator.runtime import Runtime
    from scaleserve.operator.settings import OperatorSettings

    clock = [0.0]
    settings = OperatorSettings(reconcile_interval_s=10.0)  # children resynced every 60 s
    rt = Runtime(settings, None, None, clock=lambda: clock[0])  # type: ignore[arg-type]
    key = ("ns", "chat")
    assert rt.resync_due(key)  # never applied
    rt.applied(key)
    clock[0] = 45.0
    assert not rt.resync_due(key)
    clock[0] = 51.0  # the next tick would be past the period: re-apply now
    assert rt.resync_due(key)
    rt.applied(key)
    rt.dirty.add(key)  # a watched child was deleted
    assert rt.resync_due(key)
    delay = rt.refused(key, {"Role/chat-gateway": "forbidden"})
    assert 4.0 <= delay <= 6.0
    assert not rt.resync_due(key)
    clock[0] += delay
    assert rt.resync_due(key)


def test_a_spec_is_parsed_once_per_generation() -> None:
    from scaleserve.operator.runtime import Runtime
    from scaleserve.operator.settings import OperatorSettings

    rt = Runtime(OperatorSettings(), None, None)  # type: ignore[arg-type]

    def body(uid: str, generation: int, replicas: int) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": "chat", "uid": uid, "generation": generation}
        layout = {"replicas": replicas, "tensorParallel": 8}
        return {"metadata": meta, "spec": {"model": {"uri": "hf://org/m"}, "layout": layout}}

    def replicas(spec: EndpointSpec) -> int:
        assert spec.layout is not None
        return spec.layout.replicas

    first = rt.spec(body("u1", 1, 1))
    assert rt.spec(body("u1", 1, 1)) is first
    assert replicas(rt.spec(body("u1", 2, 3))) == 3  # a new generation: parsed again
    assert replicas(rt.spec(body("u2", 2, 2))) == 2  # a new endpoint of the same name
    rt.forget(("ns", "chat"))
    assert rt.specs == {}


def _autoscaled() -> EndpointSpec:
    return parse_spec(
        {
            "model": {"uri": "hf://org/m"},
            "autoscaling": {"gpuBudget": 8, "windowSeconds": 30, "cooldownSeconds": 300},
        }
    )


def test_a_held_reshape_follows_the_load_back_without_a_stale_held_condition() -> None:
    auto = _autoscaled()
    groups = ready_groups(1, auto)
    busy = Window(100.0, 60.0, 6)
    first = Snapshot(OWNER, 1, {"observedGeneration": 1}, groups, gateways_ready=1, window=busy)
    up = decide(auto, replace(first, free=NodeFree([], [])), NOW)
    assert up.status["targetLayout"] == "8x1"
    assert any(c["type"] == "Held" and c["status"] == "True" for c in up.status["conditions"])
    # the load falls back within seconds: the held target follows it, no cooldown
    calm = replace(first, status=up.status, window=Window(3.0, 60.0, 6), free=NodeFree([], []))
    back = decide(auto, calm, NOW + timedelta(seconds=10))
    assert back.status["targetLayout"] == "1x8"
    assert back.steps == ()
    assert [e.reason for e in back.events] == ["ReshapeCancelled"]
    assert back.status["phase"] == "Ready"
    assert not any(
        c["type"] in ("Held", "Reshaping") and c["status"] == "True"
        for c in back.status["conditions"]
    )
    # still busy: the held target stays
    still = decide(auto, replace(calm, window=busy), NOW + timedelta(seconds=10))
    assert still.status["targetLayout"] == "8x1"
