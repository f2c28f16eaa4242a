"""The operator against a real control plane: create, update, delete, placement, Pending."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool, KubeCluster, wait_for
from tests.fixtures.endpoints import (
    condition_true,
    create_endpoint,
    create_ready_endpoint,
    delete_endpoint,
    engine_pods,
    event_messages,
    event_reasons,
    get_endpoint,
    patch_endpoint,
    ready_for_generation,
    static_spec,
    wait_phase,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, kubectl

pytestmark = pytest.mark.control_plane


def _bound(pods: list[Any]) -> bool:
    return bool(pods) and all(p.spec.node_name for p in pods)


def test_create_builds_every_child_and_schedules_engines_on_gpu_nodes(
    kube_api: Any,
    kube_cluster: KubeCluster,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    created = create_endpoint(kube_api, namespace, "chat", static_spec(pool, 4, 4))
    uid = created["metadata"]["uid"]
    status = wait_phase(kube_api, namespace, "chat", "Ready", op=operator)
    assert status["currentLayout"] == "4x4"
    assert status["readyReplicas"] == 4
    assert status["url"] == f"http://chat-gateway.{namespace}.svc:8000/v1"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reshaping": "False",
        "Held": "False",
        "Degraded": "False",
    }

    apps: Any = client.AppsV1Api(kube_api)
    core: Any = client.CoreV1Api(kube_api)
    rbac: Any = client.RbacAuthorizationV1Api(kube_api)
    policy: Any = client.PolicyV1Api(kube_api)
    net: Any = client.NetworkingV1Api(kube_api)
    children: list[Any] = [
        *apps.list_namespaced_stateful_set(namespace).items,
        *apps.list_namespaced_deployment(namespace).items,
        core.read_namespaced_service("chat-engine", namespace),
        core.read_namespaced_service("chat-gateway", namespace),
        core.read_namespaced_service_account("chat-gateway", namespace),
        rbac.read_namespaced_role("chat-gateway", namespace),
        rbac.read_namespaced_role_binding("chat-gateway", namespace),
        policy.read_namespaced_pod_disruption_budget("chat-engine", namespace),
        net.read_namespaced_network_policy("chat-engine", namespace),
    ]
    for child in children:
        refs = child.metadata.owner_references or []
        assert [r.uid for r in refs] == [uid], child.metadata.name
    sets = sorted(s.metadata.name for s in apps.list_namespaced_stateful_set(namespace).items)
    assert sets == ["chat-g0-tp4", "chat-g1-tp4"]  # 16 GPUs: two node-sized groups

    pods = engine_pods(kube_api, namespace, "chat")
    assert len(pods) == 4
    assert {p.spec.node_name for p in pods} == set(pool.nodes)
    by_group: dict[str, set[str]] = {}
    for pod in pods:
        by_group.setdefault(pod.metadata.labels["scaleserve.io/group"], set()).add(
            pod.spec.node_name
        )
        assert pod.metadata.labels["scaleserve.io/tensor-parallel"] == "4"
    assert all(len(nodes) == 1 for nodes in by_group.values())  # a group never spans nodes

    table = kubectl(kube_cluster, "get", "llmep", "-n", namespace).stdout
    assert "4x4" in table.splitlines()[1]
    assert "Ready" in table.splitlines()[1]
    reasons = event_reasons(kube_api, namespace, "chat")
    assert reasons.count("GroupCreated") == 2


def test_a_spec_update_rolls_out_to_the_engines(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    create_ready_endpoint(kube_api, namespace, "chat", static_spec(pool, 2, 2), operator)
    before = {p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}

    patch_endpoint(kube_api, namespace, "chat", {"spec": {"engine": {"maxModelLen": 4096}}})
    generation = get_endpoint(kube_api, namespace, "chat")["metadata"]["generation"]

    def rolled_out() -> bool:
        pods = engine_pods(kube_api, namespace, "chat")
        fresh = [
            p for p in pods if p.metadata.uid not in before and not p.metadata.deletion_timestamp
        ]
        return len(fresh) == 2 and all(
            "--max-model-len" in p.spec.containers[0].args
            and p.spec.containers[0].args[p.spec.containers[0].args.index("--max-model-len") + 1]
            == "4096"
            for p in fresh
        )

    wait_for(rolled_out, "engine pods recreated with --max-model-len 4096", timeout_s=60)
    status = wait_status(
        kube_api,
        namespace,
        "chat",
        ready_for_generation(generation),
        "status for the new generation",
        op=operator,
    )
    assert status["currentLayout"] == "2x2"


def test_deleting_the_endpoint_garbage_collects_its_children(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    create_ready_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 8), operator)
    # /metrics mirrors the status; the endpoint's series go with it
    ep = {("namespace", namespace), ("endpoint", "chat")}

    def series(scraped: dict[Any, float], name: str, **labels: str) -> float | None:
        key = (f"scaleserve_operator_endpoint_{name}", frozenset(ep | set(labels.items())))
        return scraped.get(key)

    scraped = operator.metrics()
    assert series(scraped, "replicas") == 1
    assert series(scraped, "ready_replicas") == 1
    assert series(scraped, "gpus") == 8
    assert series(scraped, "phase", phase="Ready") == 1
    assert series(scraped, "phase", phase="Deploying") == 0
    assert series(scraped, "reshaping") == 0
    ok = ("scaleserve_operator_reconciles_total", frozenset({("outcome", "ok")}))
    assert scraped[ok] >= 1
    delete_endpoint(kube_api, namespace, "chat")
    apps: Any = client.AppsV1Api(kube_api)
    core: Any = client.CoreV1Api(kube_api)

    def gone() -> bool:
        return (
            not apps.list_namespaced_stateful_set(namespace).items
            and not apps.list_namespaced_deployment(namespace).items
            and not [s for s in core.list_namespaced_service(namespace).items]
            and not engine_pods(kube_api, namespace, "chat")
        )

    wait_for(gone, "children garbage-collected", timeout_s=60)
    wait_for(
        lambda: series(operator.metrics(), "replicas") is None,
        "the endpoint's series removed",
        timeout_s=10,
    )
    assert series(operator.metrics(), "phase", phase="Ready") is None


def test_groups_are_pinned_so_shared_nodes_fill_without_stranding_gpus(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    # 6 + 2 + 8 GPUs on two 8-GPU nodes fit only if the 2-GPU group joins the 6-GPU one; the
    # scheduler alone would spread it to the empty node and strand the 8-GPU group.
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    layouts = {"a": (3, 2), "b": (2, 1), "c": (2, 4)}
    for name, (replicas, tp) in layouts.items():
        create_ready_endpoint(kube_api, namespace, name, static_spec(pool, replicas, tp), operator)
    pods = [p for name in layouts for p in engine_pods(kube_api, namespace, name)]
    assert len(pods) == 3 + 2 + 2
    assert _bound(pods)
    nodes_of = {
        name: {p.spec.node_name for p in engine_pods(kube_api, namespace, name)} for name in layouts
    }
    assert nodes_of["a"] == nodes_of["b"]
    assert nodes_of["c"].isdisjoint(nodes_of["a"])


def test_pending_engines_mark_the_endpoint_degraded_without_thrashing(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    create_endpoint(kube_api, namespace, "big", static_spec(pool, 2, 8))
    status = wait_phase(kube_api, namespace, "big", "Degraded", op=operator)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "PodsPending"
    assert "Pending" in status["message"]
    reasons = event_reasons(kube_api, namespace, "big")
    assert "NoGPUs" in reasons
    assert "Degraded" in reasons

    apps: Any = client.AppsV1Api(kube_api)
    before = {
        s.metadata.name: s.metadata.uid for s in apps.list_namespaced_stateful_set(namespace).items
    }
    time.sleep(3)  # several reconcile ticks
    after = {
        s.metadata.name: s.metadata.uid for s in apps.list_namespaced_stateful_set(namespace).items
    }
    assert before == after  # nothing recreated or deleted while degraded
    assert get_endpoint(kube_api, namespace, "big")["status"]["readyReplicas"] == 1  # still serving

    patch_endpoint(kube_api, namespace, "big", {"spec": {"layout": {"replicas": 1}}})
    status = wait_phase(kube_api, namespace, "big", "Ready", "recovered", op=operator)
    assert status["currentLayout"] == "1x8"


def test_readiness_of_the_children_is_noticed_without_waiting_for_the_timer(
    kube_api: Any,
    kube_cluster: KubeCluster,
    namespace: str,
    gpu_pool: Any,
    stats_server: Any,
    tmp_path: Any,
) -> None:
    # a timer far slower than the test: only the watch of the engine StatefulSets and the
    # gateway Deployment can make the endpoint Ready in time
    slow = OperatorProcess(
        kube_cluster, namespace, stats_server.url_template, tmp_path / "operator.log"
    )
    slow.reconcile_interval_s = 3600.0
    slow.start()
    try:
        pool: GpuPool = gpu_pool(nodes=1, gpus=8)
        create_endpoint(kube_api, namespace, "prompt", static_spec(pool, 2, 4))
        status = wait_phase(kube_api, namespace, "prompt", "Ready", timeout_s=60, op=slow)
        assert status["readyReplicas"] == 2
        assert status["currentLayout"] == "2x4"
    finally:
        slow.stop()


def test_a_single_group_without_spare_gpus_holds_a_spec_edit_and_says_why(
    kube_api: Any,
    kube_cluster: KubeCluster,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    create_ready_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 8), operator)
    before = {p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}

    patch_endpoint(kube_api, namespace, "chat", {"spec": {"engine": {"maxModelLen": 4096}}})
    held = condition_true("Held")
    status = wait_status(kube_api, namespace, "chat", held, "the rollout held", op=operator)
    assert status["message"].startswith(
        "holding 1x8: replacing it with the current spec needs 8 spare GPUs"
    )
    assert "allowDisruption" in status["message"]
    assert status["phase"] == "Ready"
    pods = engine_pods(kube_api, namespace, "chat")
    assert {p.metadata.uid for p in pods} == before
    assert not any(p.metadata.deletion_timestamp for p in pods)
    assert "holding 1x8" in kubectl(kube_cluster, "get", "llmep", "-n", namespace).stdout
    assert event_messages(kube_api, namespace, "chat", "RolloutHeld")


def test_a_child_the_api_server_rejects_degrades_the_endpoint_quoting_the_server(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    # the CRD takes any string key; a Deployment's nodeSelector needs a valid label key
    gateway = {"nodeSelector": {"not a valid key!": "x"}}
    create_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 1, gateway=gateway))
    status = wait_phase(kube_api, namespace, "chat", "Degraded", "Degraded", op=operator)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolloutRejected"
    assert "Deployment/chat-gateway" in degraded["message"]
    assert "nodeSelector" in degraded["message"]
    warnings = event_messages(kube_api, namespace, "chat", "Degraded")
    assert any("Deployment/chat-gateway" in m and "nodeSelector" in m for m in warnings)
