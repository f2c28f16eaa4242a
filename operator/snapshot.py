"""What one pass knows about an endpoint, as immutable data (built by observe.py, read by decide).

Parsing the cluster's objects into these values is pure too, so the property tests and the
simulator build snapshots the same way the operator does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scaleserve.latency import Measured
from scaleserve.operator.builders import (
    ANNOTATION_NODE,
    LABEL_GROUP,
    LABEL_GROUP_GPUS,
    LABEL_SERVING,
    LABEL_TP,
)
from scaleserve.operator.builders.naming import Owner
from scaleserve.operator.layout import Group, Window
from scaleserve.operator.placement import NodeGPUs
from scaleserve.profiles import Profile

# hash of the pod template a group was created with: a group whose hash differs from the
# spec's is replaced by a new group (make-before-break), never rolled in place
ANNOTATION_POD_HASH = "scaleserve.io/pod-spec-hash"
# when a group was retired (taken out of the engine Service): on its StatefulSet, so the drain's
# bound survives an operator restart
ANNOTATION_RETIRING = "scaleserve.io/retiring-since"
# a shrink in place under way: the replica count the group goes to (its pods from that ordinal
# up are out of the engine Service) and when they were retired, on its StatefulSet
ANNOTATION_SHRINK_TO = "scaleserve.io/shrink-to"
ANNOTATION_SHRINK_SINCE = "scaleserve.io/shrink-since"


@dataclass(frozen=True)
class EngineGroup:
    """An engine StatefulSet as observed."""

    group: Group
    node: str | None
    replicas: int
    ready: int
    terminating: bool
    pod_hash: str | None = None
    retiring_since: str | None = None  # retired: no new requests, deleted once drained
    shrink_to: int | None = None  # shrinking in place: its ordinals from this up are retired
    shrink_since: str | None = None

    @property
    def is_ready(self) -> bool:
        return not self.terminating and self.ready >= self.replicas > 0


@dataclass(frozen=True)
class EnginePod:
    name: str
    group: str
    ip: str
    serving: bool  # carries the label the engine Service selects

    @property
    def ordinal(self) -> int:
        """The pod's ordinal in its StatefulSet (-1 if its name has none)."""
        tail = self.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1


def engine_pods(pods: Sequence[Mapping[str, Any]]) -> tuple[EnginePod, ...]:
    """The engine pods that are not terminating, with their group, IP and serving label."""
    out = []
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels") or {}
        out.append(
            EnginePod(
                meta.get("name", ""),
                labels.get(LABEL_GROUP, ""),
                pod.get("status", {}).get("podIP") or "",
                labels.get(LABEL_SERVING) == "true",
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class ReplicaLoad:
    """What the gateways report about one engine pod: requests in flight on it (summed over
    the gateways) and whether any gateway still sends it new requests."""

    in_flight: int
    routed: bool


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
    annotations = meta.get("annotations") or {}
    return EngineGroup(
        Group(name, size, tp),
        annotations.get(ANNOTATION_NODE),
        replicas,
        ready,
        bool(meta.get("deletionTimestamp")) or _owned_by_other(meta, owner_uid),
        annotations.get(ANNOTATION_POD_HASH),
        annotations.get(ANNOTATION_RETIRING),
        *_shrink(annotations, replicas),
    )


def _shrink(annotations: Mapping[str, Any], replicas: int) -> tuple[int | None, str | None]:
    """The shrink under way (its replica count and start), if the annotations record one that
    is still to be done."""
    try:
        to = int(annotations.get(ANNOTATION_SHRINK_TO, ""))
    except ValueError:
        return None, None
    if not 0 < to < replicas:
        return None, None
    return to, annotations.get(ANNOTATION_SHRINK_SINCE)


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


@dataclass(frozen=True)
class NodeFree:
    """Free GPUs per eligible node now, and once terminating pods have released theirs."""

    now: Sequence[NodeGPUs]
    after_release: Sequence[NodeGPUs]
    # GPUs promised to pinned groups whose pods are not bound yet (eligible nodes): a group
    # created unpinned now could take them before the pinned group's pods are scheduled
    promised: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Everything decide reads about one endpoint, taken once per pass.

    status: the last status (the body's, updated with the last one this operator wrote).
    groups: the endpoint's engine groups, terminating ones included.
    free: free GPUs per node; None when observe skipped it (the endpoint looked settled) and
        decide has not asked for it.
    orphan_gpus: GPUs still held by engine pods whose group is gone (terminating).
    names_in_use: group names new groups must not take (pods of deleted groups still exist).
    window: the averaged concurrency (autoscaling endpoints).
    apply_all: re-apply every child this pass (spec changed, resync due, a child deleted).
    rejected: the server's message for each child it refused on the last apply.
    pods: the engine pods (not terminating).
    load: the gateways' report per engine pod IP (pods no gateway knows are absent); None when
        not every gateway answered, or observe skipped it (no group is retiring).
    profile: the performance profile of objectives mode (inline or read from its ConfigMap);
        None with `profile_error` saying why when it could not be read or is malformed.
    held: requests the gateways hold while no engine replica is ready (scale from zero).
    latency: the latency the gateways measured per tensor-parallel degree over their stats
        window (None: no gateway reports it); objectives mode corrects the profile with it.
    """

    owner: Owner
    generation: int | None
    status: Mapping[str, Any]
    groups: tuple[EngineGroup, ...]
    gateways_ready: int = 0
    pending: tuple[PendingPod, ...] = ()
    pending_grace_s: float = 120.0
    free: NodeFree | None = None
    orphan_gpus: int = 0
    names_in_use: frozenset[str] = frozenset()
    window: Window | None = None
    apply_all: bool = False
    rejected: Mapping[str, str] = field(default_factory=dict)
    pods: tuple[EnginePod, ...] = ()
    load: Mapping[str, ReplicaLoad] | None = None
    profile: Profile | None = None
    profile_error: str = ""
    held: int = 0
    latency: Measured | None = None

    @property
    def live(self) -> tuple[EngineGroup, ...]:
        """The groups not terminating, retiring ones included."""
        return tuple(g for g in self.groups if not g.terminating)

    @property
    def serving(self) -> tuple[EngineGroup, ...]:
        """The groups that take new requests (or will, once ready)."""
        return tuple(g for g in self.live if g.retiring_since is None)

    @property
    def retiring(self) -> tuple[EngineGroup, ...]:
        return tuple(g for g in self.live if g.retiring_since is not None)
