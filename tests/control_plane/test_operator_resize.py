"""A group's replica count changed in place: same StatefulSet, pods kept, retired ones drained."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool
from tests.fixtures.endpoints import (
    create_endpoint,
    engine_pods,
    event_messages,
    patch_endpoint,
    ready_at,
    static_spec,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StatsServer, Watch

pytestmark = pytest.mark.control_plane


STS = "chat-g0-tp1"


def _replicas(kube_api: Any, namespace: str, replicas: int) -> None:
    layout = {"replicas": replicas, "tensorParallel": 1}
    patch_endpoint(kube_api, namespace, "chat", {"spec": {"layout": layout}})


def _statefulset(kube_api: Any, namespace: str) -> Any:
    return client.AppsV1Api(kube_api).read_namespaced_stateful_set(STS, namespace)


def _grow_to_three(
    kube_api: Any, namespace: str, operator: OperatorProcess, uid: str, first: dict[str, str]
) -> dict[str, Any]:
    """2x1 -> 3x1 in place: the same StatefulSet, the first pods kept; the pods by name."""
    _replicas(kube_api, namespace, 3)
    wait_status(
        kube_api, namespace, "chat", ready_at("3x1"), "3x1 Ready", timeout_s=90, op=operator
    )
    sts = _statefulset(kube_api, namespace)
    assert sts.metadata.uid == uid
    assert sts.spec.replicas == 3
    pods = {p.metadata.name: p for p in engine_pods(kube_api, namespace, "chat")}
    assert set(pods) == {f"{STS}-0", f"{STS}-1", f"{STS}-2"}
    assert all(pods[n].metadata.uid == first[n] for n in first)  # nothing was replaced
    resized = event_messages(kube_api, namespace, "chat", "GroupResized")
    assert any("from 2 to 3 replicas in place" in m for m in resized), resized
    return pods


def _shrink_while_the_retired_pod_is_busy(
    kube_api: Any,
    namespace: str,
    operator: OperatorProcess,
    stats_server: StatsServer,
    busy_pod: Any,
) -> None:
    """3x1 -> 1x1 with a long generation on a retired replica: it drains, not deleted yet."""
    busy = {"address": f"{busy_pod.status.pod_ip}:50051", "in_flight": 1}
    stats_server.replicas[(namespace, "chat")] = [{**busy, "serving": False}]
    _replicas(kube_api, namespace, 1)
    draining = wait_status(
        kube_api,
        namespace,
        "chat",
        lambda s: "draining replicas of g0-tp1: 1 request(s) in flight" in s.get("message", ""),
        "the retired replicas to drain",
        timeout_s=90,
        op=operator,
    )
    assert draining["phase"] == "Reshaping"
    sts = _statefulset(kube_api, namespace)
    assert sts.spec.replicas == 3  # not lowered while a retired replica has requests
    assert sts.metadata.annotations["scaleserve.io/shrink-to"] == "1"
    labels = {p.metadata.name: p.metadata.labels for p in engine_pods(kube_api, namespace, "chat")}
    assert labels[f"{STS}-0"].get("scaleserve.io/serving") == "true"
    assert "scaleserve.io/serving" not in labels[f"{STS}-1"]
    assert "scaleserve.io/serving" not in labels[f"{STS}-2"]


def _shrunk_to_one(
    kube_api: Any, namespace: str, operator: OperatorProcess, uid: str, first: dict[str, str]
) -> None:
    """Once the generation finished: the StatefulSet lowered to 1, the first pod kept."""
    wait_status(
        kube_api, namespace, "chat", ready_at("1x1"), "1x1 Ready", timeout_s=90, op=operator
    )

    def shrunk(_: dict[str, Any]) -> bool:
        names = [p.metadata.name for p in engine_pods(kube_api, namespace, "chat")]
        return names == [f"{STS}-0"]

    wait_status(kube_api, namespace, "chat", shrunk, "the retired pods gone", 180, op=operator)
    sts = _statefulset(kube_api, namespace)
    assert sts.metadata.uid == uid
    assert sts.spec.replicas == 1
    assert "scaleserve.io/shrink-to" not in (sts.metadata.annotations or {})
    (kept,) = engine_pods(kube_api, namespace, "chat")
    assert kept.metadata.uid == first[f"{STS}-0"]
    resized = event_messages(kube_api, namespace, "chat", "GroupResized")
    assert any(m.startswith("shrank engine group g0-tp1 to 1 replica(s): drained") for m in resized)


def test_2x1_to_3x1_to_1x1_resizes_the_same_statefulset_and_drains_the_retired_pod_first(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    stats_server.set(namespace, "chat", 1.0)
    create_endpoint(kube_api, namespace, "chat", static_spec(pool, 2, 1))
    wait_status(kube_api, namespace, "chat", ready_at("2x1"), "2x1 Ready", op=operator)
    uid = _statefulset(kube_api, namespace).metadata.uid
    first = {p.metadata.name: p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}
    assert set(first) == {f"{STS}-0", f"{STS}-1"}

    pods = _grow_to_three(kube_api, namespace, operator, uid, first)
    # the highest ordinal is the one a shrink to 1 retires
    _shrink_while_the_retired_pod_is_busy(
        kube_api, namespace, operator, stats_server, pods[f"{STS}-2"]
    )
    stats_server.replicas[(namespace, "chat")] = []  # the generation finished
    _shrunk_to_one(kube_api, namespace, operator, uid, first)
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving >= 1
