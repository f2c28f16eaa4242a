"""The scheduler, the StatefulSet, EndpointSlice and garbage-collector controllers and kwok's
pod lifecycle, on fake GPU nodes."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool, wait_for

pytestmark = pytest.mark.control_plane

APP = "llm"


def _statefulset(pool: GpuPool, replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": APP},
        "spec": {
            "serviceName": APP,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    **pool.pod_placement(),
                    "containers": [
                        {
                            "name": "engine",
                            "image": "scaleserve/engine:test",
                            "ports": [{"name": "grpc", "containerPort": 50051}],
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def _headless_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": APP},
            "ports": [{"name": "grpc", "port": 50051}],
        },
    }


def _ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in conditions
    )


def _unschedulable(pod: Any) -> Any:
    for cond in pod.status.conditions or []:
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            return cond
    return None


def _wait_for_slices_listing(kube_api: Any, namespace: str, running: list[Any]) -> None:
    """The headless Service's EndpointSlices list exactly the `running` pods, with their
    hostnames."""
    discovery: Any = client.DiscoveryV1Api(kube_api)

    def endpoints() -> dict[str, str] | None:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={APP}"
        ).items
        found = {
            ep.hostname: ep.addresses[0]
            for s in slices
            for ep in s.endpoints or []
            if ep.conditions and ep.conditions.ready
        }
        expected = {p.metadata.name: p.status.pod_ip for p in running}
        return found if found == expected else None

    wait_for(endpoints, f"EndpointSlices with the {len(running)} Ready pods", timeout_s=30)


def test_three_8gpu_replicas_on_two_8gpu_nodes_leave_one_pending(
    kube_api: Any, namespace: str, gpu_pool: Any
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    core: Any = client.CoreV1Api(kube_api)
    apps: Any = client.AppsV1Api(kube_api)
    core.create_namespaced_service(namespace, _headless_service())
    apps.create_namespaced_stateful_set(namespace, _statefulset(pool, replicas=3, gpus=8))

    def settled() -> list[Any] | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        ready = [p for p in pods if _ready(p)]
        pending = [p for p in pods if p.status.phase == "Pending" and _unschedulable(p)]
        return pods if len(pods) == 3 and len(ready) == 2 and len(pending) == 1 else None

    pods = wait_for(settled, "2 Ready pods and 1 Unschedulable pod", timeout_s=60)
    running = sorted((p for p in pods if _ready(p)), key=lambda p: p.metadata.name)
    pending = next(p for p in pods if p.status.phase == "Pending")
    # one 8-GPU pod per 8-GPU node, both in the test's pool
    assert sorted(p.spec.node_name for p in running) == sorted(pool.nodes)
    assert pending.spec.node_name is None
    condition = _unschedulable(pending)
    assert condition is not None
    assert "Insufficient nvidia.com/gpu" in (condition.message or "")
    assert all(p.status.pod_ip for p in running)

    _wait_for_slices_listing(kube_api, namespace, running)

    # scaling down removes the pending replica (the highest ordinal) first
    apps.patch_namespaced_stateful_set_scale(APP, namespace, {"spec": {"replicas": 2}})

    def two_ready_none_pending() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return len(live) == 2 and all(_ready(p) for p in live)

    wait_for(two_ready_none_pending, "2 Ready pods after scaling to 2", timeout_s=30)

    # deleting the StatefulSet lets the garbage collector remove its pods
    apps.delete_namespaced_stateful_set(APP, namespace, propagation_policy="Background")
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items,
        "the StatefulSet's pods to be garbage-collected",
        timeout_s=60,
    )


def test_a_pod_asking_for_more_gpus_than_a_node_has_stays_unschedulable(
    kube_api: Any, namespace: str
) -> None:
    core: Any = client.CoreV1Api(kube_api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "scaleserve/engine:test",
                    "resources": {"limits": {"nvidia.com/gpu": "9"}},
                }
            ]
        },
    }
    core.create_namespaced_pod(namespace, pod)
    cond = wait_for(
        lambda: _unschedulable(core.read_namespaced_pod("too-big", namespace)),
        "the 9-GPU pod to be Unschedulable",
        timeout_s=30,
    )
    assert "nvidia.com/gpu" in (cond.message or "")
