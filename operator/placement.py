"""Where a GPU group goes: free GPUs per node and a best-fit choice (pure, no cluster access).

The gang problem: pod affinity alone keeps a group's pods together but lets the first pod land
on a node without room for the rest, leaving them Pending forever. The operator instead picks,
for each new group, a node with room for the whole group and pins the group there
(required node affinity on kubernetes.io/hostname); pod affinity to the group's own label stays
as a second guard. Free GPUs count every bound pod's GPU requests plus the GPUs of groups
already pinned to a node whose pods are not bound yet, so two groups are never promised the
same GPUs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HOSTNAME = "kubernetes.io/hostname"


@dataclass(frozen=True, order=True)
class NodeGPUs:
    name: str
    free: int


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint["key"]):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def eligible(
    node: Mapping[str, Any],
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> bool:
    meta, spec = node.get("metadata", {}), node.get("spec", {})
    if spec.get("unschedulable"):
        return False
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in node_selector.items()):
        return False
    if not all(_tolerated(t, tolerations) for t in spec.get("taints") or []):
        return False
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_gpus(pod: Mapping[str, Any], resource: str) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers") or []:
        res = container.get("resources") or {}
        amount = (res.get("limits") or {}).get(resource, (res.get("requests") or {}).get(resource))
        total += _quantity(amount) if amount is not None else 0
    return total


@dataclass(frozen=True)
class PinnedGroup:
    """A group pinned to `node` that should hold `gpus` there once all its pods are bound."""

    node: str
    gpus: int
    key: tuple[str, str, str]  # namespace, endpoint, group


def free_gpus(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    pinned: Sequence[PinnedGroup],
    *,
    resource: str,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    group_key: Any = None,
    after_release: bool = False,
) -> list[NodeGPUs]:
    """Free GPUs on each node engines of this endpoint may use, largest first.

    group_key(pod) -> (namespace, endpoint, group) | None maps a bound pod to its pinned group.
    after_release: count GPUs of terminating pods (deletionTimestamp set) as free, i.e. what
    will be free once they have shut down.
    """
    capacity: dict[str, int] = {}
    for node in nodes:
        alloc = (node.get("status", {}).get("allocatable") or {}).get(resource)
        if alloc is not None and eligible(node, node_selector, tolerations):
            capacity[node["metadata"]["name"]] = _quantity(alloc)
    used: dict[str, int] = defaultdict(int)
    bound_by_group: dict[tuple[str, str, str], int] = defaultdict(int)
    for pod in pods:
        node_name = pod.get("spec", {}).get("nodeName")
        phase = pod.get("status", {}).get("phase")
        if not node_name or phase in ("Succeeded", "Failed"):
            continue
        if after_release and pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        gpus = pod_gpus(pod, resource)
        used[node_name] += gpus
        key = group_key(pod) if group_key is not None else None
        if key is not None:
            bound_by_group[key] += gpus
    for node_name, gpus in unbound_pinned(pinned, bound_by_group).items():
        used[node_name] += gpus
    free = [NodeGPUs(name, cap - used[name]) for name, cap in capacity.items()]
    return sorted((n for n in free if n.free > 0), key=lambda n: (-n.free, n.name))


def unbound_pinned(
    pinned: Sequence[PinnedGroup], bound_by_group: Mapping[tuple[str, str, str], int]
) -> dict[str, int]:
    """GPUs per node promised to pinned groups whose pods are not bound there yet."""
    out: dict[str, int] = defaultdict(int)
    for group in pinned:
        missing = max(0, group.gpus - bound_by_group.get(group.key, 0))
        if missing:
            out[group.node] += missing
    return dict(out)


def bound_gpus(
    pods: Sequence[Mapping[str, Any]], resource: str, group_key: Any
) -> dict[tuple[str, str, str], int]:
    """GPUs of bound, unfinished pods per group key (group_key(pod) -> key | None)."""
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for pod in pods:
        if not pod.get("spec", {}).get("nodeName"):
            continue
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        key = group_key(pod)
        if key is not None:
            out[key] += pod_gpus(pod, resource)
    return dict(out)


def choose_node(size: int, nodes: Sequence[NodeGPUs]) -> str | None:
    """Best fit: the node with the fewest free GPUs that still holds the whole group."""
    fitting = [n for n in nodes if n.free >= size]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (n.free, n.name)).name


def take(nodes: Sequence[NodeGPUs], node: str, gpus: int) -> list[NodeGPUs]:
    """The free list after `gpus` more are used on `node`."""
    return [NodeGPUs(n.name, n.free - gpus) if n.name == node else n for n in nodes]


def placeable(size: int, nodes: Sequence[NodeGPUs]) -> int:
    """GPUs available to new groups of `size` (whole groups only)."""
    return sum(n.free // size * size for n in nodes) if size > 0 else 0
