"""A group's replica count changed in place: same StatefulSet, pods kept, retired ones drained."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool
from tests.fixtures.endpoints import (
    create_endpoint,
    engine_pods,
    events,
    patch_endpoint,
    ready_at,
    static_spec,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StatsServer, Watch

pytestmark = pytest.mark.control_plane


def _replicas(kube_api: Any, namespace: str, replicas: int) -> None:
    layout = {"replicas": replicas, "tensorParallel": 1}
    patch_endpoint(kube_api, namespace, "chat", {"spec": {"layout": layout}})


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
    apps = client.AppsV1Api(kube_api)
    uid = apps.read_namespaced_stateful_set("chat-g0-tp1", namespace).metadata.uid
    first = {p.metadata.name: p.metadata.uid for p in engine_pods(kube_api, namespace, "chat")}
    assert set(first) == {"chat-g0-tp1-0", "chat-g0-tp1-1"}

    _replicas(kube_api, namespace, 3)
    wait_status(
        kube_api, namespace, "chat", ready_at("3x1"), "3x1 Ready", timeout_s=90, op=operator
    )
    sts = apps.read_namespaced_stateful_set("chat-g0-tp1", namespace)
    assert sts.metadata.uid == uid
    assert sts.spec.replicas == 3
    pods = {p.metadata.name: p for p in engine_pods(kube_api, namespace, "chat")}
    assert set(pods) == {"chat-g0-tp1-0", "chat-g0-tp1-1", "chat-g0-tp1-2"}
    assert all(pods[n].metadata.uid == first[n] for n in first)  # nothing was replaced
    resized = [m for _, r, m in events(kube_api, namespace, "chat") if r == "GroupResized"]
    assert any("from 2 to 3 replicas in place" in m for m in resized), resized

    # a long generation on the highest ordinal, which a shrink to 1 retires
    busy = {"address": f"{pods['chat-g0-tp1-2'].status.pod_ip}:50051", "in_flight": 1}
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
    sts = apps.read_namespaced_stateful_set("chat-g0-tp1", namespace)
    assert sts.spec.replicas == 3  # not lowered while a retired replica has requests
    assert sts.metadata.annotations["scaleserve.io/shrink-to"] == "1"
    labels = {p.metadata.name: p.metadata.labels for p in engine_pods(kube_api, namespace, "chat")}
    assert labels["chat-g0-tp1-0"].get("scaleserve.io/serving") == "true"
    assert "scaleserve.io/serving" not in labels["chat-g0-tp1-1"]
    assert "scaleserve.io/serving" not in labels["chat-g0-tp1-2"]

    stats_server.replicas[(namespace, "chat")] = []  # the generation finished
    wait_status(
        kube_api, namespace, "chat", ready_at("1x1"), "1x1 Ready", timeout_s=90, op=operator
    )

    def shrunk(_: dict[str, Any]) -> bool:
        names = [p.metadata.name for p in engine_pods(kube_api, namespace, "chat")]
        return names == ["chat-g0-tp1-0"]

    wait_status(kube_api, namespace, "chat", shrunk, "the retired pods gone", 180, op=operator)
    sts = apps.read_namespaced_stateful_set("chat-g0-tp1", namespace)
    assert sts.metadata.uid == uid
    assert sts.spec.replicas == 1
    assert "scaleserve.io/shrink-to" not in (sts.metadata.annotations or {})
    (kept,) = engine_pods(kube_api, namespace, "chat")
    assert kept.metadata.uid == first["chat-g0-tp1-0"]
    resized = [m for _, r, m in events(kube_api, namespace, "chat") if r == "GroupResized"]
    assert any(m.startswith("shrank engine group g0-tp1 to 1 replica(s): drained") for m in resized)
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving >= 1
