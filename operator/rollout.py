"""Which steps of a transition plan are safe now (pure): every gate of make-before-break.

- a group is retired (it stops getting new requests; drain.py deletes it once drained) only
  when every other group is ready;
- while a transition deletes, at most one new group is in flight (one group in transition);
- a create waits while deleted groups' pods still hold GPUs that would push the endpoint over
  its limit (budget + surge), whether or not this transition deletes more; while no node has
  room now but one will once terminating pods are gone (rather than creating it unpinned);
  and, when no node has room at all, while pinned groups' pods are not bound yet (an unpinned
  group could take the GPUs promised to them).

A resize changes a group's replica count in place, one group at a time and only while every
group is ready and no other resize is under way: a grow raises the StatefulSet's replicas
(within the limit, on its own node); a shrink first retires the highest ordinals (`Shrink`:
their pods leave the engine Service, and drain.py lowers the replicas once they are drained).

A group's pod template is identified by a hash stamped on its StatefulSet; a group whose hash
differs from the spec's is replaced like a group of the wrong shape, never patched in place.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from scaleserve.operator.builders import Manifest, Owner, group_statefulset_name
from scaleserve.operator.builders.engine import engine_statefulset
from scaleserve.operator.layout import Group, GroupShape, group_name
from scaleserve.operator.placement import NodeGPUs, choose_node, take
from scaleserve.operator.planner import Plan
from scaleserve.operator.snapshot import ANNOTATION_POD_HASH, EngineGroup, NodeFree
from scaleserve.operator.spec import EndpointSpec
from scaleserve.operator.target import Event


@dataclass(frozen=True)
class _Keyed:
    """A spec compared and hashed by its JSON (the spec holds dicts, so it is not hashable)."""

    text: str
    spec: EndpointSpec = field(compare=False, hash=False)


def pod_hash(spec: EndpointSpec, owner: Owner, shape: GroupShape) -> str:
    """Hash of the pod template of a group of `shape` (its name and node left out); every pass
    asks for it, the spec rarely changes: computed once per spec, owner and shape."""
    return _pod_hash(_Keyed(spec.model_dump_json(), spec), owner, shape)


@functools.lru_cache(maxsize=4096)  # a few shapes per endpoint
def _pod_hash(keyed: _Keyed, owner: Owner, shape: GroupShape) -> str:
    spec = keyed.spec
    canonical = Group(group_name(0, shape.tensor_parallel), shape.size, shape.tensor_parallel)
    template = engine_statefulset(spec, owner, canonical, None)["spec"]["template"]
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamped(manifest: Manifest, hashes: Mapping[GroupShape, str], group: Group) -> Manifest:
    """A group's StatefulSet carrying the hash of its pod template."""
    meta = manifest["metadata"]
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        ANNOTATION_POD_HASH: hashes[group.shape],
    }
    return manifest


@dataclass(frozen=True)
class Create:
    group: Group
    node: str | None
    manifest: Manifest = field(compare=False)

    def __str__(self) -> str:
        return f"create {self.group.name}"


@dataclass(frozen=True)
class Retire:
    """Take a group's pods out of the engine Service (new requests stop, streams go on) and
    record when, on its StatefulSet."""

    group: Group
    statefulset: str
    since: str

    def __str__(self) -> str:
        return f"retire {self.group.name}"


@dataclass(frozen=True)
class Serve:
    """Put the label the engine Service selects back on a serving group's pods (pods created
    before the label existed, or whose label was removed by hand)."""

    group: Group

    def __str__(self) -> str:
        return f"serve {self.group.name}"


@dataclass(frozen=True)
class Delete:
    group: Group
    statefulset: str

    def __str__(self) -> str:
        return f"delete {self.group.name}"


@dataclass(frozen=True)
class Shrink:
    """Take a group's highest ordinals (from `replicas` up) out of the engine Service and
    record the replica count it goes to and when, on its StatefulSet; drain.py resizes it once
    they are drained."""

    group: Group
    statefulset: str
    replicas: int
    since: str

    def __str__(self) -> str:
        return f"shrink {self.group.name} to {self.replicas} replica(s)"


@dataclass(frozen=True)
class Resize:
    """Set a group's StatefulSet to `group`'s size (its replicas and GPU-count label) and
    clear a finished shrink's record; a StatefulSet adds or removes its highest ordinals."""

    group: Group
    statefulset: str

    def __str__(self) -> str:
        return f"resize {self.group.name} to {self.group.replicas} replica(s)"


Step = Create | Retire | Serve | Delete | Shrink | Resize


@dataclass
class _Pass:
    """What the steps taken so far in this pass changed."""

    live: list[EngineGroup]
    not_ready: set[str]
    orphans: int
    now: list[NodeGPUs]
    after: list[NodeGPUs]
    promised: int
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def safe_steps(
    spec: EndpointSpec,
    owner: Owner,
    live: Sequence[EngineGroup],
    plan: Plan,
    free: NodeFree,
    *,
    limit: int,
    orphan_gpus: int,
    hashes: Mapping[GroupShape, str],
    since: str,
) -> tuple[tuple[Step, ...], str, tuple[Event, ...]]:
    """The plan's steps that are safe now, what the rest waits for, and their events."""
    state = _Pass(
        list(live),
        {g.group.name for g in live if not g.is_ready},
        orphan_gpus,
        list(free.now),
        list(free.after_release),
        free.promised,
    )
    deletes = any(s.action == "delete" for s in plan.steps)
    waiting = ""
    shrinking = sorted(g.group.name for g in live if g.shrink_to is not None)
    if shrinking:  # one group in transition: the shrink's drain first (drain.py)
        return (), "", ()
    for step in plan.steps:
        if step.action == "delete":
            waiting = _retire(state, owner, step.group, since)
        elif step.action == "resize":
            waiting = _resize(state, owner, step.group, step.old_size, limit, since)
        else:
            waiting = _create(state, spec, owner, step.group, limit, deletes, hashes)
            if not waiting and deletes:
                waiting = f"waiting for {step.group.name} to become ready"
        if waiting:
            break
    return tuple(state.steps), waiting, tuple(state.events)


def _retire(state: _Pass, owner: Owner, group: Group, since: str) -> str:
    others = state.not_ready - {group.name}
    if others:
        return f"waiting for {', '.join(sorted(others))} to become ready"
    serving = [g.group.name for g in state.live if g.group.name != group.name]
    state.steps.append(Retire(group, group_statefulset_name(owner.name, group), since))
    why = f"{', '.join(sorted(serving))} serving" if serving else "the last group"
    message = f"retired engine group {group.name} ({why}): no new requests, deleted once drained"
    state.events.append(Event("Normal", "GroupRetired", message))
    state.not_ready.discard(group.name)
    gone = next(g for g in state.live if g.group.name == group.name)
    state.live = [g for g in state.live if g.group.name != group.name]
    # its pods hold their GPUs until they have drained and shut down
    state.orphans += group.size
    if gone.node is not None:
        state.after = _released(state.after, gone.node, group.size)
    return ""


def _resize(state: _Pass, owner: Owner, group: Group, old_size: int, limit: int, since: str) -> str:
    """A grow (its GPUs within the limit and on its node) or the start of a shrink; either way
    the next step waits for it."""
    if state.not_ready:
        return f"waiting for {', '.join(sorted(state.not_ready))} to become ready"
    name = group_statefulset_name(owner.name, group)
    now = next(g for g in state.live if g.group.name == group.name)
    replicas, was = group.replicas, old_size // group.tensor_parallel
    state.live = [g for g in state.live if g.group.name != group.name]
    if group.size < old_size:
        state.steps.append(Shrink(now.group, name, replicas, since))
        message = (
            f"retired replicas {replicas} to {was - 1} of engine group {group.name}: "
            f"no new requests, {replicas} replica(s) once drained"
        )
        state.events.append(Event("Normal", "ReplicasRetired", message))
        state.orphans += old_size - group.size  # held until the retired pods are gone
        state.live.append(replace(now, group=group, replicas=replicas, shrink_to=replicas))
        return f"draining replicas of {group.name}"
    added = group.size - old_size
    held = sum(g.group.size for g in state.live) + old_size + state.orphans
    if held + added > limit:
        state.live.append(now)
        return f"waiting for deleted engine pods to release GPUs before growing {group.name}"
    if now.node is not None:
        if not any(n.name == now.node and n.free >= added for n in state.now):
            state.live.append(now)
            return f"waiting for {added} free GPUs on node {now.node} to grow {group.name}"
        state.now = take(state.now, now.node, added)
        state.after = take(state.after, now.node, added)
    state.steps.append(Resize(group, name))
    message = f"grew engine group {group.name} from {was} to {replicas} replicas in place"
    state.events.append(Event("Normal", "GroupResized", message))
    state.live.append(replace(now, group=group, replicas=replicas))
    state.not_ready.add(group.name)
    return f"waiting for {group.name} to reach {replicas} ready replicas"


def _released(nodes: Sequence[NodeGPUs], node: str, gpus: int) -> list[NodeGPUs]:
    """The free list once `gpus` on `node` are released."""
    if any(n.name == node for n in nodes):
        return take(nodes, node, -gpus)
    return [*nodes, NodeGPUs(node, gpus)]


def _create(
    state: _Pass,
    spec: EndpointSpec,
    owner: Owner,
    group: Group,
    limit: int,
    deletes: bool,
    hashes: Mapping[GroupShape, str],
) -> str:
    name = group.name
    if state.not_ready and deletes:
        return f"waiting for {', '.join(sorted(state.not_ready))} to become ready"
    # pods of deleted groups hold their GPUs until they are gone: they count against the limit
    held = sum(g.group.size for g in state.live) + state.orphans
    if held + group.size > limit:
        return f"waiting for deleted engine pods to release GPUs before creating {name}"
    node = choose_node(group.size, state.now)
    if node is None and choose_node(group.size, state.after) is not None:
        # make-before-break: wait for terminating pods rather than create it unpinned
        return f"waiting for terminating pods to release GPUs before creating {name}"
    if node is None and state.promised:
        return f"waiting for pinned groups to be scheduled before creating {name}"
    manifest = stamped(engine_statefulset(spec, owner, group, node), hashes, group)
    state.steps.append(Create(group, node, manifest))
    if node is None:
        message = f"no node has {group.size} free GPUs for group {name}; it stays Pending"
        state.events.append(Event("Warning", "NoGPUs", message))
    else:
        state.now, state.after = (
            take(state.now, node, group.size),
            take(state.after, node, group.size),
        )
        state.promised += group.size
    where = f"on node {node}" if node else "unpinned"
    what = f"{group.replicas}x TP{group.tensor_parallel} {where}"
    state.events.append(Event("Normal", "GroupCreated", f"created engine group {name}: {what}"))
    state.live.append(EngineGroup(group, node, group.replicas, 0, False, hashes[group.shape]))
    state.not_ready.add(name)
    return ""
