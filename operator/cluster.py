"""What the operator reads from the cluster for one endpoint (engine groups, pods, free GPUs).

Reads come from `ClusterView`, watched caches of nodes, pods, engine StatefulSets and gateway
Deployments (operator/informer.py): a reconcile lists nothing, so its cost does not grow with
the number of endpoints, and a change of a child's readiness is seen (and can trigger the
owner's reconcile) as soon as the watch delivers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scaleserve.operator.builders import LABEL_COMPONENT, LABEL_ENDPOINT, LABEL_GROUP
from scaleserve.operator.informer import Informer, Key
from scaleserve.operator.kube import Kube
from scaleserve.operator.placement import (
    PinnedGroup,
    bound_gpus,
    eligible,
    free_gpus,
    pod_gpus,
    unbound_pinned,
)
from scaleserve.operator.snapshot import EngineGroup, NodeFree, parse_group
from scaleserve.operator.spec import EndpointSpec

MANAGED = {"app.kubernetes.io/managed-by": "scaleserve-operator"}


def _group_key(pod: Mapping[str, Any]) -> tuple[str, str, str] | None:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    if LABEL_GROUP not in labels:
        return None
    return meta.get("namespace", ""), labels.get(LABEL_ENDPOINT, ""), labels[LABEL_GROUP]


def _endpoint_of(obj: Mapping[str, Any] | None) -> tuple[str, str] | None:
    meta = (obj or {}).get("metadata") or {}
    endpoint = (meta.get("labels") or {}).get(LABEL_ENDPOINT)
    return (meta.get("namespace") or "", endpoint) if endpoint else None


def _readiness(obj: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What of a child's state its endpoint's status depends on: ready replicas (as far as the
    controller has seen the current spec), desired replicas, and whether it is going away."""
    if obj is None:
        return None
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    current = meta.get("generation") == status.get("observedGeneration")
    return (
        int(status.get("readyReplicas") or 0) if current else None,
        spec.get("replicas"),
        bool(meta.get("deletionTimestamp")),
    )


class ClusterView:
    """Watched caches of what reconciles read. `on_child_change(namespace, endpoint)` is called
    when an engine StatefulSet or gateway Deployment of an endpoint changes readiness,
    `on_child_deleted(namespace, endpoint)` when one is deleted."""

    def __init__(
        self,
        kube: Kube,
        namespaces: Sequence[str | None] = (),
        on_child_change: Callable[[str, str], None] | None = None,
        on_child_deleted: Callable[[str, str], None] | None = None,
    ) -> None:
        self._on_child_change = on_child_change
        self._on_child_deleted = on_child_deleted
        self.nodes = Informer(kube, "Node")
        self.pods = Informer(
            kube, "Pod", fields="status.phase!=Succeeded,status.phase!=Failed", index=_endpoint_of
        )
        self.engines = Informer(
            kube,
            "StatefulSet",
            labels={**MANAGED, LABEL_COMPONENT: "engine"},
            on_change=self._child,
            index=_endpoint_of,
        )
        # the gateways live in the watched namespaces (the operator may read only those)
        self.gateways = [
            Informer(
                kube,
                "Deployment",
                namespace=ns,
                labels={**MANAGED, LABEL_COMPONENT: "gateway"},
                on_change=self._child,
            )
            for ns in (list(namespaces) or [None])
        ]

        self._pin_memo: dict[Key, tuple[dict[str, Any], PinnedGroup | None, bool]] = {}
        self._pod_memo: dict[Key, tuple[dict[str, Any], str, int]] = {}

    @property
    def informers(self) -> list[Informer]:
        return [self.nodes, self.pods, self.engines, *self.gateways]

    def _child(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        owner = _endpoint_of(new) or _endpoint_of(old)
        if owner and new is None and self._on_child_deleted:
            self._on_child_deleted(*owner)  # before the prompt pass, so it re-applies everything
        if owner and self._on_child_change and _readiness(old) != _readiness(new):
            self._on_child_change(*owner)

    def engine_groups(
        self, namespace: str, endpoint: str, owner_uid: str | None = None
    ) -> list[EngineGroup]:
        items = self.engines.indexed((namespace, endpoint))
        groups = [parse_group(s, owner_uid) for s in items]
        return sorted((g for g in groups if g is not None), key=lambda g: g.group.name)

    def endpoint_pods(self, namespace: str, endpoint: str, component: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.pods.indexed((namespace, endpoint))
            if (p["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == component
        ]

    def _pins(self) -> list[tuple[PinnedGroup, bool]]:
        """Every pinned engine group with whether it is terminating; parsed once per version
        of its StatefulSet (placement runs for every new group, over every group)."""
        fresh: dict[Key, tuple[dict[str, Any], PinnedGroup | None, bool]] = {}
        for key, sts in self.engines.objects.items():
            hit = self._pin_memo.get(key)
            if hit is None or hit[0] is not sts:
                group = parse_group(sts)
                pin = None
                if group is not None and group.node is not None:
                    owner = _endpoint_of(sts) or ("", "")
                    pin = PinnedGroup(group.node, group.group.size, (*owner, group.group.name))
                hit = (sts, pin, group is not None and group.terminating)
            fresh[key] = hit
        self._pin_memo = fresh
        return [(pin, terminating) for _, pin, terminating in fresh.values() if pin is not None]

    def _gpu_pods(self, resource: str) -> list[dict[str, Any]]:
        """Bound pods that hold `resource` (the only ones free GPUs depend on)."""
        fresh: dict[Key, tuple[dict[str, Any], str, int]] = {}
        for key, pod in self.pods.objects.items():
            hit = self._pod_memo.get(key)
            if hit is None or hit[0] is not pod or hit[1] != resource:
                bound = bool(pod.get("spec", {}).get("nodeName"))
                hit = (pod, resource, pod_gpus(pod, resource) if bound else 0)
            fresh[key] = hit
        self._pod_memo = fresh
        return [pod for pod, _, gpus in fresh.values() if gpus > 0]

    def node_free_gpus(self, spec: EndpointSpec) -> NodeFree:
        """Free GPUs per eligible node, counting GPUs promised to pinned groups not yet bound."""
        pins = self._pins()
        pinned = [pin for pin, _ in pins]
        staying = [pin for pin, terminating in pins if not terminating]
        nodes, pods = list(self.nodes), self._gpu_pods(spec.gpu.resource_name)
        common: dict[str, Any] = {
            "resource": spec.gpu.resource_name,
            "node_selector": spec.node_selector,
            "tolerations": spec.tolerations,
            "group_key": _group_key,
        }
        names = {
            n["metadata"]["name"]
            for n in nodes
            if eligible(n, spec.node_selector, spec.tolerations)
        }
        bound = bound_gpus(pods, spec.gpu.resource_name, _group_key)
        promised = sum(g for n, g in unbound_pinned(staying, bound).items() if n in names)
        return NodeFree(
            free_gpus(nodes, pods, pinned, **common),
            free_gpus(nodes, pods, staying, after_release=True, **common),
            promised,
        )

    def gateway_ready(self, namespace: str, name: str) -> int:
        for informer in self.gateways:
            deployment = informer.get(namespace, name)
            if deployment is not None:
                return int(deployment.get("status", {}).get("readyReplicas") or 0)
        return 0

    def reserve(self, statefulset: Mapping[str, Any]) -> dict[str, Any]:
        """Put an engine StatefulSet about to be applied into the cache, so placements made
        before the API server answers count its GPUs; `release` takes it back on failure."""
        reservation = {**statefulset, "metadata": dict(statefulset["metadata"])}
        self.engines.assume(reservation)
        return reservation

    def release(self, reservation: dict[str, Any]) -> None:
        self.engines.discard(reservation)

    def assume(self, obj: dict[str, Any]) -> None:
        """Take the API server's answer to the operator's own apply of a watched child."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if obj.get("kind") == "StatefulSet" and labels.get(LABEL_COMPONENT) == "engine":
            self.engines.assume(obj)
        elif obj.get("kind") == "Deployment" and labels.get(LABEL_COMPONENT) == "gateway":
            for informer in self.gateways:
                if informer.namespace in (None, obj["metadata"].get("namespace")):
                    informer.assume(obj)


def utcnow() -> datetime:
    return datetime.now(UTC)
