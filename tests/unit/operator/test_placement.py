"""Placement: free GPUs per node (counting pinned-but-unbound groups) and best fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from scaleserve.operator.placement import (
    NodeGPUs,
    PinnedGroup,
    choose_node,
    free_gpus,
    placeable,
    take,
)

pytestmark = pytest.mark.unit

GPU = "nvidia.com/gpu"


def node(
    name: str, gpus: int = 8, *, taint: str | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": [{"key": taint, "effect": "NoSchedule"}] if taint else []},
        "status": {
            "allocatable": {GPU: str(gpus), "cpu": "32"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    node_name: str | None,
    gpus: int,
    group: str | None = None,
    phase: str = "Running",
    *,
    terminating: bool = False,
) -> dict[str, Any]:
    labels = {"scaleserve.io/endpoint": "chat", "scaleserve.io/group": group} if group else {}
    meta: dict[str, Any] = {"name": "p", "namespace": "ns", "labels": labels}
    if terminating:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node_name,
            "containers": [{"resources": {"limits": {GPU: str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def key(p: dict[str, Any]) -> tuple[str, str, str] | None:
    labels = p["metadata"]["labels"]
    return (
        ("ns", labels["scaleserve.io/endpoint"], labels["scaleserve.io/group"]) if labels else None
    )


def compute(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    pinned: Sequence[PinnedGroup] = (),
    **kw: Any,
) -> list[NodeGPUs]:
    args: dict[str, Any] = {"resource": GPU, "node_selector": {}, "tolerations": []}
    args.update(kw)
    return free_gpus(nodes, pods, list(pinned), group_key=key, **args)


def test_bound_pods_use_gpus_and_finished_pods_do_not() -> None:
    free = compute([node("a"), node("b")], [pod("a", 3), pod("a", 1, phase="Succeeded")])
    assert free == [NodeGPUs("b", 8), NodeGPUs("a", 5)]


def test_a_pinned_group_reserves_its_gpus_until_its_pods_are_bound() -> None:
    pinned = [PinnedGroup("a", 8, ("ns", "chat", "g1-tp1"))]
    assert compute([node("a"), node("b")], [], pinned) == [NodeGPUs("b", 8)]
    # half of it bound: still 8 in use on the node, not 12
    pods = [pod("a", 1, "g1-tp1") for _ in range(4)]
    assert compute([node("a"), node("b")], pods, pinned) == [NodeGPUs("b", 8)]


def test_tainted_and_unselected_nodes_are_skipped_unless_tolerated() -> None:
    nodes = [node("a", taint="kwok.x-k8s.io/node"), node("b", labels={"class": "h100"}), node("c")]
    assert [n.name for n in compute(nodes, [])] == ["b", "c"]
    assert [n.name for n in compute(nodes, [], node_selector={"class": "h100"})] == ["b"]
    tolerate = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    assert [n.name for n in compute(nodes, [], tolerations=tolerate)] == ["a", "b", "c"]


def test_best_fit_leaves_whole_nodes_free() -> None:
    nodes = [NodeGPUs("a", 8), NodeGPUs("b", 2), NodeGPUs("c", 4)]
    assert choose_node(2, nodes) == "b"
    assert choose_node(3, nodes) == "c"
    assert choose_node(8, nodes) == "a"
    assert choose_node(16, nodes) is None
    assert take(nodes, "a", 8)[0] == NodeGPUs("a", 0)
    assert placeable(8, nodes) == 8
    assert placeable(2, nodes) == 14


def test_gpus_of_terminating_pods_count_as_free_only_after_release() -> None:
    pods = [pod("a", 8, terminating=True), pod("b", 2)]
    assert compute([node("a"), node("b")], pods) == [NodeGPUs("b", 6)]
    after = compute([node("a"), node("b")], pods, after_release=True)
    assert after == [NodeGPUs("a", 8), NodeGPUs("b", 6)]
