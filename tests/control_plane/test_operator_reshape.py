"""Reshaping from live concurrency, fed through the gateway /stats contract, on kwok GPU nodes."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool
from tests.fixtures.endpoints import (
    MODEL,
    condition_true,
    create_endpoint,
    engine_pods,
    events,
    get_endpoint,
    patch_endpoint,
    settled_at,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StatsServer, Watch

pytestmark = pytest.mark.control_plane

BUDGET, SURGE = 8, 8


def autoscaling_spec(pool: GpuPool, surge: int = SURGE) -> dict[str, Any]:
    return {
        "model": MODEL,
        "autoscaling": {
            "gpuBudget": BUDGET,
            "surgeGPUs": surge,
            "tensorParallelCandidates": [8, 1],
            "concurrencyThresholds": [64],
            "windowSeconds": 2,
            "cooldownSeconds": 2,
            "hysteresis": 0.1,
        },
        **pool.pod_placement(),
    }


def test_concurrency_reshapes_1x8_to_8x1_and_back_within_budget(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    stats_server.set(namespace, "chat", 4.0)
    create_endpoint(kube_api, namespace, "chat", autoscaling_spec(pool))
    wait_status(kube_api, namespace, "chat", settled_at("1x8"), "1x8 Ready", op=operator)

    stats_server.set(namespace, "chat", 100.0)
    status = wait_status(
        kube_api, namespace, "chat", settled_at("8x1"), "8x1 Ready", timeout_s=90, op=operator
    )
    assert status["observedConcurrency"] == pytest.approx(100.0)
    assert status["lastReshapeTime"]

    stats_server.set(namespace, "chat", 3.0)
    wait_status(
        kube_api, namespace, "chat", settled_at("1x8"), "back to 1x8", timeout_s=90, op=operator
    )

    assert watch.errors == []
    # make-before-break on a spare node: the mixed layout is visible, budget + surge is never
    # exceeded and at least one engine serves throughout
    assert "1x8+8x1" in watch.layouts, watch.layouts
    assert "Reshaping" in watch.phases
    assert watch.max_gpus <= BUDGET + SURGE
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving > 0

    seen = events(kube_api, namespace, "chat")
    reasons = [r for _, r, _ in seen]
    started = [m for _, r, m in seen if r == "ReshapeStarted"]
    assert any(m.startswith("1x8 -> 8x1") for m in started), started
    assert any(m.startswith("8x1 -> 1x8") for m in started), started
    assert reasons.count("ReshapeCompleted") >= 2
    assert reasons.count("GroupCreated") >= 3
    assert reasons.count("GroupDeleted") >= 2
    assert "NoSpareGPUs" not in reasons
    # the operator's /metrics counts the same events and shows the concurrency it acts on
    metrics = operator.metrics()
    posted = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "scaleserve_operator_events_total" and ("type", "Normal") in labels
    }
    assert posted["ReshapeStarted"] >= 2
    assert posted["ReshapeCompleted"] >= 2
    ep = frozenset({("namespace", namespace), ("endpoint", "chat")})
    assert metrics[("scaleserve_operator_endpoint_observed_concurrency", ep)] > 0


def test_a_retired_group_is_deleted_once_the_gateways_report_its_requests_done(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    stats_server.set(namespace, "chat", 4.0)
    create_endpoint(kube_api, namespace, "chat", autoscaling_spec(pool))
    wait_status(kube_api, namespace, "chat", settled_at("1x8"), "1x8 Ready", op=operator)
    (old,) = engine_pods(kube_api, namespace, "chat")
    assert old.status.pod_ip
    group = old.metadata.labels["scaleserve.io/group"]
    # a long generation on the TP8 engine, not routed any more once the pod leaves the Service
    busy = {"address": f"{old.status.pod_ip}:50051", "in_flight": 2, "serving": False}
    stats_server.replicas[(namespace, "chat")] = [busy]

    stats_server.set(namespace, "chat", 100.0)
    draining = wait_status(
        kube_api,
        namespace,
        "chat",
        lambda s: f"draining {group}: 2 request(s) in flight" in s.get("message", ""),
        "the retired group to drain",
        timeout_s=90,
        op=operator,
    )
    assert draining["currentLayout"] == "8x1"
    assert draining["phase"] == "Reshaping"
    pods = {p.metadata.name: p for p in engine_pods(kube_api, namespace, "chat")}
    assert old.metadata.name in pods  # still running its streams, out of the engine Service
    assert "scaleserve.io/serving" not in pods[old.metadata.name].metadata.labels
    assert all(
        p.metadata.labels.get("scaleserve.io/serving") == "true"
        for n, p in pods.items()
        if n != old.metadata.name
    )
    sts = client.AppsV1Api(kube_api).read_namespaced_stateful_set(f"chat-{group}", namespace)
    assert sts.metadata.annotations["scaleserve.io/retiring-since"]

    stats_server.replicas[(namespace, "chat")] = []  # the generation finished
    wait_status(
        kube_api, namespace, "chat", settled_at("8x1"), "8x1 Ready", timeout_s=90, op=operator
    )
    deleted = [m for _, r, m in events(kube_api, namespace, "chat") if r == "GroupDeleted"]
    assert any(m.startswith(f"deleted engine group {group}: drained in") for m in deleted), deleted
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving > 0


def test_an_operator_restarted_mid_reshape_converges(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    stats_server.set(namespace, "chat", 1.0)
    create_endpoint(kube_api, namespace, "chat", autoscaling_spec(pool))
    wait_status(kube_api, namespace, "chat", settled_at("1x8"), "1x8 Ready", op=operator)

    stats_server.set(namespace, "chat", 500.0)
    mid = wait_status(
        kube_api,
        namespace,
        "chat",
        lambda s: s.get("targetLayout") == "8x1" and s.get("currentLayout") != "8x1",
        "the reshape to start",
        timeout_s=60,
        op=operator,
    )
    operator.kill()
    assert mid["phase"] in ("Reshaping", "Ready", "Deploying")

    operator.start()
    status = wait_status(
        kube_api,
        namespace,
        "chat",
        settled_at("8x1"),
        "8x1 after restart",
        timeout_s=90,
        op=operator,
    )
    assert status["readyReplicas"] == 8
    names = sorted(
        p.metadata.labels["scaleserve.io/group"] for p in engine_pods(kube_api, namespace, "chat")
    )
    assert len(set(names)) == 1
    assert names[0].endswith("-tp1")
    assert watch.max_gpus <= BUDGET + SURGE
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving > 0


def test_without_spare_gpus_a_single_group_holds_until_disruption_is_allowed(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    stats_server.set(namespace, "chat", 1.0)
    create_endpoint(kube_api, namespace, "chat", autoscaling_spec(pool, surge=0))
    wait_status(kube_api, namespace, "chat", settled_at("1x8"), "1x8 Ready", op=operator)
    before = {p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}

    stats_server.set(namespace, "chat", 200.0)
    held = wait_status(
        kube_api,
        namespace,
        "chat",
        condition_true("Held"),
        "the reshape held",
        timeout_s=60,
        op=operator,
    )
    assert held["message"].startswith("holding 1x8: a reshape to 8x1 needs 8 spare GPUs")
    assert "surgeGPUs" in held["message"]
    assert held["phase"] == "Ready"
    assert held["readyReplicas"] == 1
    assert {p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")} == before
    assert [m for t, r, m in events(kube_api, namespace, "chat") if r == "RolloutHeld"]

    patch_endpoint(kube_api, namespace, "chat", {"spec": {"rollout": {"allowDisruption": True}}})
    wait_status(
        kube_api, namespace, "chat", settled_at("8x1"), "8x1 Ready", timeout_s=90, op=operator
    )
    warnings = [m for t, r, m in events(kube_api, namespace, "chat") if r == "NoSpareGPUs"]
    assert warnings
    assert "serving stops until its replacement is ready" in warnings[0]
    assert watch.max_gpus <= BUDGET


def test_a_spec_edit_on_two_tp8_groups_replaces_them_one_at_a_time_and_keeps_serving(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=3, gpus=8)
    stats_server.set(namespace, "chat", 1.0)
    spec = autoscaling_spec(pool, surge=8)
    spec["autoscaling"]["gpuBudget"] = 16
    create_endpoint(kube_api, namespace, "chat", spec)
    wait_status(kube_api, namespace, "chat", settled_at("2x8"), "2x8 Ready", op=operator)
    before = {p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}

    patch_endpoint(kube_api, namespace, "chat", {"spec": {"engine": {"maxModelLen": 4096}}})
    generation = get_endpoint(kube_api, namespace, "chat")["metadata"]["generation"]
    seen: list[int] = []

    def rolled(status: dict[str, Any]) -> bool:
        seen.append(int(status.get("readyReplicas") or 0))
        pods = engine_pods(kube_api, namespace, "chat")
        fresh = [p for p in pods if p.metadata.uid not in before]
        return (
            status.get("observedGeneration") == generation
            and settled_at("2x8")(status)
            and len(fresh) == 2
            and all(p.metadata.uid not in before for p in pods)
        )

    wait_status(kube_api, namespace, "chat", rolled, "both groups replaced", 120, op=operator)
    assert min(seen) >= 1, seen  # every status written during the rollout
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving >= 1
    assert watch.max_gpus <= 16 + 8
    args = [p.spec.containers[0].args for p in engine_pods(kube_api, namespace, "chat")]
    assert all(a[a.index("--max-model-len") + 1] == "4096" for a in args)
