"""What reconciles read: kopf's indexes of the watched children and nodes, with the operator's
own writes laid over them at once; readiness changes of a child wake its endpoint."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import pytest

from scaleserve.operator import cluster
from scaleserve.operator.builders import ANNOTATION_NODE
from scaleserve.operator.cluster import ClusterView
from scaleserve.operator.placement import NodeGPUs, choose_node
from scaleserve.operator.spec import parse_spec

pytestmark = pytest.mark.unit

SPEC = parse_spec(
    {"model": {"uri": "hf://org/tiny"}, "layout": {"replicas": 1, "tensorParallel": 1}}
)
Fn = Callable[[Mapping[str, Any]], dict[Hashable, dict[str, Any]]]
# the indexes handlers.py registers with kopf, by kind (kopf applies the label filters)
FUNCS: dict[str, list[tuple[str, Fn]]] = {
    "StatefulSet": [("engines", cluster.engines_index)],
    "Deployment": [("gateways", cluster.gateways_index)],
    "Pod": [("endpoint_pods", cluster.endpoint_pods_index), ("gpu_pods", cluster.gpu_pods_index)],
    "Node": [("nodes", cluster.nodes_index)],
}


class _Lookup(Mapping[Hashable, list[dict[str, Any]]]):
    def __init__(self, stores: dict[Hashable, dict[tuple[str, str], dict[str, Any]]]) -> None:
        self.stores = stores

    def __getitem__(self, key: Hashable) -> list[dict[str, Any]]:
        return list(self.stores[key].values())

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.stores)

    def __len__(self) -> int:
        return len(self.stores)


class Indexes:
    """kopf's indexes as the watch fills them: each event replaces what an object put in."""

    def __init__(self) -> None:
        names = [name for funcs in FUNCS.values() for name, _ in funcs]
        self.stores: dict[str, dict[Hashable, dict[tuple[str, str], dict[str, Any]]]] = {
            n: {} for n in names
        }

    def lookups(self) -> dict[str, _Lookup]:
        return {name: _Lookup(stores) for name, stores in self.stores.items()}

    def event(self, kind: str, obj: dict[str, Any], *, deleted: bool = False) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        for name, fn in FUNCS[kind]:
            stores = self.stores[name]
            for index_key in list(stores):
                stores[index_key].pop(key, None)
                if not stores[index_key]:
                    del stores[index_key]
            for index_key, value in ({} if deleted else fn(obj)).items():
                stores.setdefault(index_key, {})[key] = value


class View(ClusterView):
    """A ClusterView over test indexes; `watch` delivers an event to both, as kopf does."""

    def __init__(self) -> None:
        self.kopf = Indexes()
        super().__init__(self.kopf.lookups())

    def watch(self, event: str | None, obj: dict[str, Any]) -> bool:
        kind = obj["kind"]
        self.kopf.event(kind, obj, deleted=event == "DELETED")
        if kind in ("StatefulSet", "Deployment"):
            return self.child_event(kind, event, obj)
        return False


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


def pod(
    name: str, *, node: str | None, gpus: int, phase: str = "Running", labels: bool = True
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "10",
            "labels": (
                {
                    "scaleserve.io/endpoint": "chat",
                    "scaleserve.io/group": "g0-tp1",
                    "app.kubernetes.io/component": "engine",
                }
                if labels
                else {}
            ),
        },
        "spec": {
            **({"nodeName": node} if node else {}),
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def test_an_indexed_object_older_than_the_operators_own_write_does_not_replace_it() -> None:
    cache = View()
    cache.assume(engine("chat", "g0-tp1", 1, version=7, ready=1))
    cache.watch("MODIFIED", engine("chat", "g0-tp1", 1, version=6, ready=0))
    (group,) = cache.engine_groups("ns", "chat")
    assert group.is_ready
    # a newer one does, and the write laid over the index is forgotten
    cache.watch("MODIFIED", engine("chat", "g0-tp1", 1, version=8, ready=0))
    (group,) = cache.engine_groups("ns", "chat")
    assert not group.is_ready
    assert cache.engines.objects == {}


def test_a_write_the_watch_delivered_before_its_answer_is_not_laid_over_the_index() -> None:
    # otherwise it stays until the object's next event, and every pass merges it
    cache = View()
    cache.watch("ADDED", engine("chat", "g0-tp1", 1, version=7))
    cache.assume(engine("chat", "g0-tp1", 1, version=7))
    cache.assume(engine("chat", "g0-tp1", 1, version=7))  # a no-op apply: no event follows
    assert cache.engines.objects == {}
    (group,) = cache.engine_groups("ns", "chat")
    assert group.group.name == "g0-tp1"


def test_groups_are_read_per_endpoint() -> None:
    cache = View()
    cache.assume(engine("chat", "g0-tp1", 1, version=1))
    cache.watch(None, engine("chat", "g1-tp1", 1, version=2))
    cache.watch(None, engine("code", "g0-tp1", 1, version=3))
    cache.assume(engine("chat", "g0-tp1", 1, version=4, namespace="other"))
    assert [g.group.name for g in cache.engine_groups("ns", "chat")] == ["g0-tp1", "g1-tp1"]
    assert [g.group.name for g in cache.engine_groups("ns", "code")] == ["g0-tp1"]
    assert cache.engine_groups("ns", "absent") == []


def test_a_child_changing_readiness_wakes_its_endpoint_and_nothing_else_does() -> None:
    cache = View()
    cache.assume(engine("chat", "g0-tp1", 1, version=1))
    # the operator's own write: the pass that wrote it goes on
    assert not cache.watch("ADDED", engine("chat", "g0-tp1", 1, version=1))
    relabelled = engine("chat", "g0-tp1", 1, version=2)
    relabelled["metadata"]["labels"]["extra"] = "x"
    assert not cache.watch("MODIFIED", relabelled)  # nothing its status depends on changed
    ready = engine("chat", "g0-tp1", 1, version=3, ready=1)
    assert cache.watch("MODIFIED", ready)
    assert cache.watch("DELETED", ready)
    assert cache.engine_groups("ns", "chat") == []
    assert cache.engines.objects == {}


def test_the_initial_listing_wakes_nothing() -> None:
    cache = View()
    assert not cache.watch(None, engine("chat", "g0-tp1", 1, version=1, ready=1))
    assert cache.engine_groups("ns", "chat")[0].is_ready
    # a change after the listing does
    assert cache.watch("MODIFIED", engine("chat", "g0-tp1", 1, version=2, ready=0))


def test_a_group_just_applied_is_counted_by_the_next_placement() -> None:
    cache = View()
    cache.watch(None, gpu_node("gpu-0", 8))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 8)]
    # the apply's answer is in the cache before any watch event: the GPUs are promised
    cache.assume(engine("chat", "g0-tp1", 6, version=5, node="gpu-0"))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 2)]
    assert choose_node(4, cache.node_free_gpus(SPEC).now) is None


def test_a_deleted_group_counts_as_terminating_until_the_watch_drops_it() -> None:
    cache = View()
    cache.watch(None, gpu_node("gpu-0", 8))
    cache.assume(engine("chat", "g0-tp1", 8, version=5, node="gpu-0", ready=8))
    cache.assume_deleted("ns", "chat-g0-tp1", "2026-01-01T00:00:00Z")
    (group,) = cache.engine_groups("ns", "chat")
    assert group.terminating
    free = cache.node_free_gpus(SPEC)
    assert free.now == []  # its pods may still run
    assert free.after_release == [NodeGPUs("gpu-0", 8)]


def test_gateway_readiness_is_read_from_the_watched_deployment() -> None:
    cache = View()
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
    # the watch's newer version replaces the operator's own
    newer = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": "4"}}
    assert cache.watch("MODIFIED", {**newer, "status": {"readyReplicas": 1}})
    assert cache.gateway_ready("ns", "chat-gateway") == 1


def test_gpus_promised_to_a_pinned_group_count_until_its_pods_are_bound() -> None:
    cache = View()
    cache.watch(None, gpu_node("gpu-0", 8))
    cache.assume(engine("chat", "g0-tp1", 6, version=5, node="gpu-0"))
    assert cache.node_free_gpus(SPEC).promised == 6
    for i in range(6):
        cache.watch("ADDED", pod(f"chat-g0-tp1-{i}", node="gpu-0", gpus=1))
    free = cache.node_free_gpus(SPEC)
    assert free.promised == 0
    assert free.now == [NodeGPUs("gpu-0", 2)]  # bound pods, not counted twice


def test_a_reserved_group_holds_its_gpus_until_released() -> None:
    cache = View()
    cache.watch(None, gpu_node("gpu-0", 8))
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


def test_free_gpus_count_bound_unfinished_pods_of_anyone_and_nothing_else() -> None:
    cache = View()
    cache.watch(None, gpu_node("gpu-0", 8))
    cache.watch(None, pod("other-bound", node="gpu-0", gpus=3, labels=False))
    cache.watch(None, pod("other-done", node="gpu-0", gpus=2, phase="Succeeded", labels=False))
    cache.watch(None, pod("other-pending", node=None, gpus=2, labels=False))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 5)]
    # only the endpoint's own pods are its pods, finished ones not at all
    cache.watch(None, pod("chat-g0-tp1-0", node="gpu-0", gpus=1))
    cache.watch(None, pod("chat-g0-tp1-1", node="gpu-0", gpus=1, phase="Failed"))
    names = [p["metadata"]["name"] for p in cache.endpoint_pods("ns", "chat", "engine")]
    assert names == ["chat-g0-tp1-0"]
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 4)]
    cache.watch("DELETED", pod("other-bound", node="gpu-0", gpus=3, labels=False))
    assert cache.node_free_gpus(SPEC).now == [NodeGPUs("gpu-0", 7)]


def test_kept_objects_drop_managed_fields() -> None:
    sts = engine("chat", "g0-tp1", 1, version=1)
    sts["metadata"]["managedFields"] = [{"manager": "x"}]
    (kept,) = cluster.engines_index(sts).values()
    assert "managedFields" not in kept["metadata"]
    assert "managedFields" in sts["metadata"]  # kopf's own body is left alone
