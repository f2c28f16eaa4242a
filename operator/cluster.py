"""What the operator reads from the cluster for one endpoint (engine groups, pods, free GPUs).

kopf watches nodes, pods, engine StatefulSets and gateway Deployments and keeps them in its
indexes (the `*_index` functions below say what each index holds; handlers.py registers them);
`ClusterView` reads those indexes, so a reconcile lists nothing and its cost does not grow with
the number of endpoints. The operator's own writes of engine StatefulSets and gateway
Deployments are laid over the indexes at once (`assume`), from the API server's answer, until
the watch delivers them: the next pass sees what the last one applied.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from scaleserve.operator.builders import LABEL_COMPONENT, LABEL_ENDPOINT, LABEL_GROUP
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
ENGINE_LABELS = {**MANAGED, LABEL_COMPONENT: "engine"}
GATEWAY_LABELS = {**MANAGED, LABEL_COMPONENT: "gateway"}
FINISHED = ("Succeeded", "Failed")

Key = tuple[str, str]  # namespace, name
# what kopf's indexes look like to a reader: a key -> the values stored under it
Index = Mapping[Hashable, Iterable[dict[str, Any]]]


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the operator keeps it: managedFields (most of an object's size) and node
    images dropped; nothing here reads them."""
    obj = dict(body)
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    obj["metadata"] = meta
    if obj.get("kind") == "Node" and "images" in (obj.get("status") or {}):
        obj["status"] = {k: v for k, v in obj["status"].items() if k != "images"}
    return obj


def endpoint_of(obj: Mapping[str, Any] | None) -> Key | None:
    meta = (obj or {}).get("metadata") or {}
    endpoint = (meta.get("labels") or {}).get(LABEL_ENDPOINT)
    return (meta.get("namespace") or "", endpoint) if endpoint else None


def _name_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _version(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


# What kopf's indexes hold (each returns {key: value}; {} keeps the object out of the index).


def engines_index(body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """Engine StatefulSets by (namespace, endpoint)."""
    owner = endpoint_of(body)
    return {owner: slim(body)} if owner else {}


def gateways_index(body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """Gateway Deployments by (namespace, name)."""
    return {_name_of(body): slim(body)}


def endpoint_pods_index(body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """Unfinished pods of an endpoint (engines and gateways) by (namespace, endpoint)."""
    owner = endpoint_of(body)
    if owner is None or (body.get("status") or {}).get("phase") in FINISHED:
        return {}
    return {owner: slim(body)}


def gpu_pods_index(body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    """Bound, unfinished pods asking for an extended resource (GPUs of any vendor), whoever
    owns them: free GPUs per node depend on these only."""
    spec = body.get("spec") or {}
    if not spec.get("nodeName") or (body.get("status") or {}).get("phase") in FINISHED:
        return {}
    extended = any(
        "/" in name
        for c in spec.get("containers") or []
        for kind in ("limits", "requests")
        for name in ((c.get("resources") or {}).get(kind) or {})
    )
    return {None: slim(body)} if extended else {}


def nodes_index(body: Mapping[str, Any]) -> dict[Hashable, dict[str, Any]]:
    return {None: slim(body)}


def readiness(obj: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
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


def _group_key(pod: Mapping[str, Any]) -> tuple[str, str, str] | None:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    if LABEL_GROUP not in labels:
        return None
    return meta.get("namespace", ""), labels.get(LABEL_ENDPOINT, ""), labels[LABEL_GROUP]


def _values(index: Index, key: Hashable) -> list[dict[str, Any]]:
    return list(index[key]) if key in index else []


class Overlay:
    """Objects the operator wrote (or reserved, or deleted) that the watch may not have
    delivered yet, by (namespace, name). An indexed object replaces one laid over it once it
    is newer (by resourceVersion); a deletion mark stays until the watch says more."""

    def __init__(self) -> None:
        self.objects: dict[Key, tuple[dict[str, Any], bool]] = {}  # (object, deletion mark)

    def put(self, obj: dict[str, Any], *, deleting: bool = False) -> None:
        self.objects[_name_of(obj)] = (obj, deleting)

    def drop(self, obj: Mapping[str, Any], *, only: Mapping[str, Any] | None = None) -> None:
        hit = self.objects.get(_name_of(obj))
        if hit is not None and (only is None or hit[0] is only):
            del self.objects[_name_of(obj)]

    def seen(self, obj: Mapping[str, Any] | None, *, deleted: bool = False) -> None:
        """The watch delivered `obj`: what is laid over it is stale unless newer."""
        if obj is None:
            return
        hit = self.objects.get(_name_of(obj))
        if hit is not None and (deleted or not self._wins(hit, obj)):
            del self.objects[_name_of(obj)]

    @staticmethod
    def _wins(hit: tuple[dict[str, Any], bool], indexed: Mapping[str, Any]) -> bool:
        mine, theirs = _version(hit[0]), _version(indexed)
        return mine > theirs or (hit[1] and mine == theirs)

    def merge(self, indexed: Iterable[dict[str, Any]], match: Any) -> list[dict[str, Any]]:
        """`indexed` with the laid-over objects for which `match(obj)` holds in their place."""
        out = {_name_of(o): o for o in indexed}
        for key, hit in self.objects.items():
            if not match(hit[0]):
                continue
            current = out.get(key)
            if current is None or self._wins(hit, current):
                out[key] = hit[0]
        return list(out.values())


class ClusterView:
    """kopf's indexes of what reconciles read, with the operator's own writes laid over them.

    `indexes` maps each index's name (the `*_index` functions above without the suffix) to
    kopf's index of that name (or, in tests, a mapping of the same shape)."""

    def __init__(self, indexes: Mapping[str, Index]) -> None:
        self.indexes = indexes
        self.engines, self.gateways = Overlay(), Overlay()
        self._seen: dict[tuple[str, Key], tuple[Any, ...] | None] = {}
        self._pin_memo: dict[Key, tuple[dict[str, Any], PinnedGroup | None, bool]] = {}
        self._pod_memo: dict[Key, tuple[dict[str, Any], str, int]] = {}

    def child_event(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        """A watch event of an engine StatefulSet or gateway Deployment; returns whether its
        endpoint's status may depend on what changed (then the endpoint's pass is due). The
        initial listing (`event_type` None) and the operator's own writes change nothing."""
        deleted = event_type == "DELETED"
        (self.engines if kind == "StatefulSet" else self.gateways).seen(obj, deleted=deleted)
        key = (kind, _name_of(obj))
        before = self._seen.get(key)
        now = None if deleted else readiness(obj)
        if deleted:
            self._seen.pop(key, None)
        else:
            self._seen[key] = now
        return event_type is not None and (deleted or before != now)

    def engine_statefulsets(self, namespace: str, endpoint: str) -> list[dict[str, Any]]:
        indexed = _values(self.indexes["engines"], (namespace, endpoint))
        return self.engines.merge(indexed, lambda o: endpoint_of(o) == (namespace, endpoint))

    def engine_groups(
        self, namespace: str, endpoint: str, owner_uid: str | None = None
    ) -> list[EngineGroup]:
        groups = [parse_group(s, owner_uid) for s in self.engine_statefulsets(namespace, endpoint)]
        return sorted((g for g in groups if g is not None), key=lambda g: g.group.name)

    def endpoint_pods(self, namespace: str, endpoint: str, component: str) -> list[dict[str, Any]]:
        return [
            p
            for p in _values(self.indexes["endpoint_pods"], (namespace, endpoint))
            if (p["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == component
        ]

    def _all_engines(self) -> list[dict[str, Any]]:
        index = self.indexes["engines"]
        return self.engines.merge((s for k in index for s in index[k]), lambda _: True)

    def _pins(self) -> list[tuple[PinnedGroup, bool]]:
        """Every pinned engine group with whether it is terminating; parsed once per version
        of its StatefulSet (placement runs for every new group, over every group)."""
        fresh: dict[Key, tuple[dict[str, Any], PinnedGroup | None, bool]] = {}
        for sts in self._all_engines():
            key = _name_of(sts)
            hit = self._pin_memo.get(key)
            if hit is None or hit[0] is not sts:
                group = parse_group(sts)
                pin = None
                if group is not None and group.node is not None:
                    owner = endpoint_of(sts) or ("", "")
                    pin = PinnedGroup(group.node, group.group.size, (*owner, group.group.name))
                hit = (sts, pin, group is not None and group.terminating)
            fresh[key] = hit
        self._pin_memo = fresh
        return [(pin, terminating) for _, pin, terminating in fresh.values() if pin is not None]

    def _gpu_pods(self, resource: str) -> list[dict[str, Any]]:
        """Bound pods that hold `resource` (the only ones free GPUs depend on)."""
        fresh: dict[Key, tuple[dict[str, Any], str, int]] = {}
        for pod in _values(self.indexes["gpu_pods"], None):
            key = _name_of(pod)
            hit = self._pod_memo.get(key)
            if hit is None or hit[0] is not pod or hit[1] != resource:
                hit = (pod, resource, pod_gpus(pod, resource))
            fresh[key] = hit
        self._pod_memo = fresh
        return [pod for pod, _, gpus in fresh.values() if gpus > 0]

    def node_free_gpus(self, spec: EndpointSpec) -> NodeFree:
        """Free GPUs per eligible node, counting GPUs promised to pinned groups not yet bound."""
        pins = self._pins()
        pinned = [pin for pin, _ in pins]
        staying = [pin for pin, terminating in pins if not terminating]
        nodes, pods = _values(self.indexes["nodes"], None), self._gpu_pods(spec.gpu.resource_name)
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
        indexed = _values(self.indexes["gateways"], (namespace, name))
        found = self.gateways.merge(indexed, lambda o: _name_of(o) == (namespace, name))
        return int((found[0].get("status") or {}).get("readyReplicas") or 0) if found else 0

    def reserve(self, statefulset: Mapping[str, Any]) -> dict[str, Any]:
        """Lay an engine StatefulSet about to be applied over the index, so placements made
        before the API server answers count its GPUs; `release` takes it back on failure."""
        reservation = {**statefulset, "metadata": dict(statefulset["metadata"])}
        self.engines.put(reservation)
        return reservation

    def release(self, reservation: dict[str, Any]) -> None:
        self.engines.drop(reservation, only=reservation)

    def assume(self, obj: dict[str, Any]) -> None:
        """Take the API server's answer to the operator's own apply of a watched child (its
        watch event then reports no change)."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        kind = obj.get("kind")
        if kind == "StatefulSet" and labels.get(LABEL_COMPONENT) == "engine":
            overlay, index, key = self.engines, self.indexes["engines"], endpoint_of(obj)
        elif kind == "Deployment" and labels.get(LABEL_COMPONENT) == "gateway":
            overlay, index, key = self.gateways, self.indexes["gateways"], _name_of(obj)
        else:
            return
        self._seen[(kind, _name_of(obj))] = readiness(obj)
        # already delivered by the watch (it was quicker than the answer): laid over the index,
        # it would stay until the object's next event, and every pass would merge it
        name, mine = _name_of(obj), _version(obj)
        if any(_name_of(o) == name and _version(o) >= mine for o in _values(index, key)):
            overlay.drop(obj)
        else:
            overlay.put(slim(obj))

    def assume_deleted(self, namespace: str, name: str, stamp: str) -> None:
        """Mark an engine StatefulSet the operator just deleted as terminating until the watch
        says more."""
        for sts in self._all_engines():
            if _name_of(sts) == (namespace, name):
                meta = {**sts["metadata"], "deletionTimestamp": stamp}
                self.engines.put({**sts, "metadata": meta}, deleting=True)
                return


def utcnow() -> datetime:
    return datetime.now(UTC)
