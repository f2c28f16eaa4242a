"""The watched caches reconciles read: own writes seen at once, stale events ignored, readiness
changes of a child requeue its endpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scaleserve.operator.builders import ANNOTATION_NODE
from scaleserve.operator.cluster import ClusterView
from scaleserve.operator.kube import Kube
from scaleserve.operator.placement import NodeGPUs, choose_node
from scaleserve.operator.spec import parse_spec
from scaleserve.operator.triggers import event_manifest

pytestmark = pytest.mark.unit

SPEC = parse_spec(
    {"model": {"uri": "hf://org/tiny"}, "layout": {"replicas": 1, "tensorParallel": 1}}
)


def engine(
    endpoint: str,
    group: str,
    size: int,
    *,
    version: int,
    ready: int = 0,
    node: str | None = None,
    namespace: str = "ns",
) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {
            "name": f"{endpoint}-{group}",
            "namespace": namespace,
            "resourceVersion": str(version),
            "generation": 1,
            "labels": {
                "app.kubernetes.io/managed-by": "scaleserve-operator",
                "app.kubernetes.io/component": "engine",
                "scaleserve.io/endpoint": endpoint,
                "scaleserve.io/group": group,
                "scaleserve.io/tensor-parallel": "1",
                "scaleserve.io/group-gpus": str(size),
            },
            "annotations": {ANNOTATION_NODE: node} if node else {},
        },
        "spec": {"replicas": size},
        "status": {"observedGeneration": 1, "readyReplicas": ready},
    }


def gpu_node(name: str, gpus: int, version: int = 1) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": str(version)},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def view(calls: list[tuple[str, str]] | None = None, *, synced: bool = True) -> ClusterView:
    kube = Kube(None, "scaleserve-operator")  # type: ignore[arg-type]  # never called here
    out = ClusterView(kube, ("ns",), None if calls is None else lambda ns, n: calls.append((ns, n)))
    if synced:
        for informer in out.informers:
            informer.synced.set()
    return out


def test_an_event_older_than_the_cached_object_does_not_replace_it() -> None:
    cache = view()
    cache.assume(engine("chat", "g0-tp1", 1, version=7, ready=1))
    cache.engines.assume(engine("chat", "g0-tp1", 1, version=6, ready=0))
    (group,) = cache.engine_groups("ns", "chat")
    assert group.is_ready


def test_groups_are_read_per_endpoint() -> None:
    cache = view()
    cache.assume(engine("chat", "g0-tp1", 1, version=1))
    cache.assume(engine("chat", "g1-tp1", 1, version=2))
    cache.assume(engine("code", "g0-tp1", 1, version=3))
    cache.assume(engine("chat", "g0-tp1", 1, version=4, namespace="other"))
    assert [g.group.name for g in cache.engine_groups("ns", "chat")] == ["g0-tp1", "g1-tp1"]
    assert [g.group.name for g in cache.engine_groups("ns", "code")] == ["g0-tp1"]
    assert cache.engine_groups("ns", "absent") == []


def test_a_child_changing_readiness_requeues_its_endpoint_and_nothing_else_does() -> None:
    calls: list[tuple[str, str]] = []
    cache = view(calls)
    cache.assume(engine("chat", "g0-tp1", 1, version=1))
    assert calls == []  # the operator's own write: the pass that wrote it goes on
    relabelled = engine("chat", "g0-tp1", 1, version=2)
    relabelled["metadata"]["labels"]["extra"] = "x"
    cache.engines.handle({"type": "MODIFIED", "object": relabelled})
    assert calls == []  # nothing its status depends on changed
    ready = engine("chat", "g0-tp1", 1, version=3, ready=1)
    cache.engines.handle({"type": "MODIFIED", "object": ready})
    assert calls == [("ns", "chat")]
    cache.engines.handle({"type": "DELETED", "object": ready})
    assert calls == [("ns", "chat")] * 2
    assert cache.engine_groups("ns", "chat") == []


def test_the_initial_listing_requeues_nothing() -> None:
    calls: list[tuple[str, str]] = []
    cache = view(calls, synced=False)
    cache.engines.handle(
        {"type": "ADDED", "object": engine("chat", "g0-tp1", 1, version=1, ready=1)}
    )
    assert calls == []
    assert cache.engine_groups("ns", "chat")[0].is_ready


def test_a_group_just_applied_is_counted_by_the_next_placement() -> None:
    cache = view()
    cache.nodes.assume(gpu_node("gpu-0", 8))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 8)]
    # the apply's answer is in the cache before any watch event: the GPUs are promised
    cache.assume(engine("chat", "g0-tp1", 6, version=5, node="gpu-0"))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 2)]
    assert choose_node(4, cache.node_free_gpus(SPEC).now) is None


def test_a_deleted_group_counts_as_terminating_until_the_watch_drops_it() -> None:
    cache = view()
    cache.nodes.assume(gpu_node("gpu-0", 8))
    cache.assume(engine("chat", "g0-tp1", 8, version=5, node="gpu-0", ready=8))
    cache.engines.assume_deleted("ns", "chat-g0-tp1", "2026-01-01T00:00:00Z")
    (group,) = cache.engine_groups("ns", "chat")
    assert group.terminating
    free = cache.node_free_gpus(SPEC)
    assert free.now == []  # its pods may still run
    assert free.after_release == [NodeGPUs("gpu-0", 8)]


def test_gateway_readiness_is_read_from_the_watched_deployment() -> None:
    cache = view()
    assert cache.gateway_ready("ns", "chat-gateway") == 0
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "chat-gateway",
            "namespace": "ns",
            "resourceVersion": "3",
            "labels": {
                "app.kubernetes.io/managed-by": "scaleserve-operator",
                "app.kubernetes.io/component": "gateway",
                "scaleserve.io/endpoint": "chat",
            },
        },
        "status": {"readyReplicas": 2},
    }
    cache.assume(deployment)
    assert cache.gateway_ready("ns", "chat-gateway") == 2


def test_an_event_names_its_endpoint() -> None:
    body = {
        "apiVersion": "scaleserve.io/v1alpha1",
        "kind": "LLMEndpoint",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"},
    }
    event = event_manifest(
        body, "Normal", "GroupCreated", "created", datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert event["metadata"] == {"generateName": "chat.", "namespace": "ns"}
    assert event["involvedObject"]["uid"] == "u1"
    assert (event["type"], event["reason"], event["lastTimestamp"]) == (
        "Normal",
        "GroupCreated",
        "2026-01-01T00:00:00Z",
    )


def test_gpus_promised_to_a_pinned_group_count_until_its_pods_are_bound() -> None:
    cache = view()
    cache.nodes.assume(gpu_node("gpu-0", 8))
    cache.assume(engine("chat", "g0-tp1", 6, version=5, node="gpu-0"))
    assert cache.node_free_gpus(SPEC).promised == 6
    for i in range(6):
        cache.pods.assume(
            {
                "metadata": {
                    "name": f"chat-g0-tp1-{i}",
                    "namespace": "ns",
                    "resourceVersion": str(10 + i),
                    "labels": {"scaleserve.io/endpoint": "chat", "scaleserve.io/group": "g0-tp1"},
                },
                "spec": {
                    "nodeName": "gpu-0",
                    "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                },
                "status": {"phase": "Running"},
            }
        )
    free = cache.node_free_gpus(SPEC)
    assert free.promised == 0
    assert free.now == [NodeGPUs("gpu-0", 2)]  # bound pods, not counted twice


def test_a_reserved_group_holds_its_gpus_until_released() -> None:
    cache = view()
    cache.nodes.assume(gpu_node("gpu-0", 8))
    manifest = engine("chat", "g0-tp1", 8, version=0, node="gpu-0")
    del manifest["metadata"]["resourceVersion"]  # not applied yet
    reservation = cache.reserve(manifest)
    assert cache.node_free_gpus(SPEC).now == []
    cache.release(reservation)  # the apply failed
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 8)]
    # once applied, the API server's object replaces the reservation and release is a no-op
    reservation = cache.reserve(manifest)
    cache.assume(engine("chat", "g0-tp1", 8, version=9, node="gpu-0"))
    cache.release(reservation)
    assert [g.group.name for g in cache.engine_groups("ns", "chat")] == ["g0-tp1"]
