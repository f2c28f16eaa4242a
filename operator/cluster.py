"""What the operator reads from the cluster for one endpoint (engine groups, pods, free GPUs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaleserve.operator.builders import (
    ANNOTATION_NODE,
    LABEL_COMPONENT,
    LABEL_ENDPOINT,
    LABEL_GROUP,
    LABEL_GROUP_GPUS,
    LABEL_TP,
)
from scaleserve.operator.kube import Kube
from scaleserve.operator.layout import Group
from scaleserve.operator.placement import NodeGPUs, PinnedGroup, free_gpus
from scaleserve.operator.spec import EndpointSpec

MANAGED = {"app.kubernetes.io/managed-by": "scaleserve-operator"}


@dataclass(frozen=True)
class EngineGroup:
    """An engine StatefulSet as observed."""

    group: Group
    node: str | None
    replicas: int
    ready: int
    terminating: bool

    @property
    def is_ready(self) -> bool:
        return not self.terminating and self.ready >= self.replicas > 0


def _owned_by_other(meta: Mapping[str, Any], owner_uid: str | None) -> bool:
    refs = meta.get("ownerReferences") or []
    return owner_uid is not None and bool(refs) and all(r.get("uid") != owner_uid for r in refs)


def parse_group(sts: Mapping[str, Any], owner_uid: str | None = None) -> EngineGroup | None:
    """An engine StatefulSet as a group. With `owner_uid`, a StatefulSet owned by another
    object (a deleted endpoint of the same name, awaiting garbage collection) counts as
    terminating: it is not one of this endpoint's groups."""
    meta = sts.get("metadata", {})
    labels = meta.get("labels") or {}
    try:
        tp = int(labels[LABEL_TP])
        size = int(labels[LABEL_GROUP_GPUS])
        name = labels[LABEL_GROUP]
    except (KeyError, ValueError):
        return None
    spec, status = sts.get("spec", {}), sts.get("status", {})
    replicas = int(spec.get("replicas", 0))
    current = status.get("observedGeneration") == meta.get("generation")
    ready = int(status.get("readyReplicas") or 0) if current else 0
    if status.get("updatedReplicas", replicas) < replicas:
        ready = min(ready, int(status.get("updatedReplicas") or 0))
    return EngineGroup(
        Group(name, size, tp),
        (meta.get("annotations") or {}).get(ANNOTATION_NODE),
        replicas,
        ready,
        bool(meta.get("deletionTimestamp")) or _owned_by_other(meta, owner_uid),
    )


async def engine_groups(
    kube: Kube, namespace: str, endpoint: str, owner_uid: str | None = None
) -> list[EngineGroup]:
    items = await kube.list(
        "StatefulSet", namespace, labels={LABEL_ENDPOINT: endpoint, LABEL_COMPONENT: "engine"}
    )
    groups = [parse_group(s, owner_uid) for s in items]
    return sorted((g for g in groups if g is not None), key=lambda g: g.group.name)


def _age_s(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    return (now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


@dataclass(frozen=True)
class PendingPod:
    name: str
    group: str
    seconds: float
    message: str


def pending_pods(pods: Sequence[Mapping[str, Any]], now: datetime) -> list[PendingPod]:
    """Engine pods the scheduler could not place, with how long they have waited."""
    out = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp") or pod.get("spec", {}).get("nodeName"):
            continue
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out.append(
                    PendingPod(
                        pod["metadata"]["name"],
                        (pod["metadata"].get("labels") or {}).get(LABEL_GROUP, ""),
                        _age_s(cond.get("lastTransitionTime"), now),
                        cond.get("message") or cond.get("reason") or "unschedulable",
                    )
                )
    return out


async def endpoint_pods(
    kube: Kube, namespace: str, endpoint: str, component: str
) -> list[dict[str, Any]]:
    return await kube.list(
        "Pod", namespace, labels={LABEL_ENDPOINT: endpoint, LABEL_COMPONENT: component}
    )


def _group_key(pod: Mapping[str, Any]) -> tuple[str, str, str] | None:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    if LABEL_GROUP not in labels:
        return None
    return meta.get("namespace", ""), labels.get(LABEL_ENDPOINT, ""), labels[LABEL_GROUP]


@dataclass(frozen=True)
class NodeFree:
    """Free GPUs per eligible node now, and once terminating pods have released theirs."""

    now: list[NodeGPUs]
    after_release: list[NodeGPUs]


async def node_free_gpus(kube: Kube, spec: EndpointSpec) -> NodeFree:
    """Free GPUs per eligible node, counting GPUs promised to pinned groups not yet bound."""
    nodes = await kube.list("Node")
    pods = await kube.list("Pod", fields="status.phase!=Succeeded,status.phase!=Failed")
    pinned, staying = [], []
    for sts in await kube.list("StatefulSet", labels={**MANAGED, LABEL_COMPONENT: "engine"}):
        group = parse_group(sts)
        if group is None or group.node is None:
            continue
        ns = sts["metadata"].get("namespace", "")
        endpoint = (sts["metadata"].get("labels") or {}).get(LABEL_ENDPOINT, "")
        pin = PinnedGroup(group.node, group.group.size, (ns, endpoint, group.group.name))
        pinned.append(pin)
        if not group.terminating:
            staying.append(pin)
    common: dict[str, Any] = {
        "resource": spec.gpu.resource_name,
        "node_selector": spec.node_selector,
        "tolerations": spec.tolerations,
        "group_key": _group_key,
    }
    return NodeFree(
        free_gpus(nodes, pods, pinned, **common),
        free_gpus(nodes, pods, staying, after_release=True, **common),
    )


async def gateway_ready(kube: Kube, namespace: str, name: str) -> int:
    deployment = await kube.get("Deployment", namespace, name)
    if deployment is None:
        return 0
    return int(deployment.get("status", {}).get("readyReplicas") or 0)


def utcnow() -> datetime:
    return datetime.now(UTC)
