"""When a retired engine group goes (pure).

A group leaving the layout is first retired: its pods lose the label the engine Service selects,
so the gateways stop sending it new requests while the streams they have open go on. It is
deleted once every gateway reports no request in flight on its pods and none still routing new
ones there, or once `spec.rollout.drainSeconds` have passed since it was retired (the time is
on its StatefulSet, so a restarted operator keeps it); its engines then get their own SIGTERM
drain (drainTimeoutSeconds) for whatever is left.

A group shrinking in place drains the same way, per replica: its highest ordinals lose the
label, and its replicas are lowered (the StatefulSet removes exactly those pods) once the
gateways report none of them has a request in flight, or at the same bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from scaleserve.operator.builders import group_statefulset_name
from scaleserve.operator.layout import Group
from scaleserve.operator.rollout import Delete, Resize, Retire, Serve, Shrink, Step
from scaleserve.operator.snapshot import EngineGroup, EnginePod, ReplicaLoad, Snapshot
from scaleserve.operator.spec import EndpointSpec
from scaleserve.operator.target import Event, seconds_since


def in_flight(pods: Sequence[EnginePod], load: Mapping[str, ReplicaLoad] | None) -> int | None:
    """Requests in flight on `pods`; None while that is not known to stay zero: a gateway did
    not answer, a pod still carries the serving label or a gateway still routes to it."""
    if load is None or any(p.serving for p in pods):
        return None
    reports = [load[p.ip] for p in pods if p.ip in load]
    if any(r.routed for r in reports):
        return None
    return sum(r.in_flight for r in reports)


def drain_steps(
    spec: EndpointSpec, snap: Snapshot, now: datetime
) -> tuple[tuple[Step, ...], str, tuple[Event, ...]]:
    """Deletes of the retiring groups that are drained (or past the bound), a retire again for
    those whose pods got the serving label back (a pod recreated by its StatefulSet), what the
    others wait for, and the label back on serving groups' pods that lack it."""
    # (a shrinking group's label is left as it is until the shrink is done: Serve labels
    # every pod of a group)
    steps: list[Step] = [
        Serve(g.group)
        for g in snap.serving
        if g.shrink_to is None and any(p.group == g.group.name and not p.serving for p in snap.pods)
    ]
    waiting: list[str] = []
    events: list[Event] = []
    bound = spec.rollout.drain_seconds
    for g in snap.serving:
        if g.shrink_to is not None:
            step, wait, event = _shrink(g, snap, now, bound)
            steps += step
            waiting += wait
            events += event
    for g in snap.retiring:
        pods = [p for p in snap.pods if p.group == g.group.name]
        name = group_statefulset_name(snap.owner.name, g.group)
        elapsed = seconds_since(g.retiring_since, now) or 0.0
        left = in_flight(pods, snap.load)
        if left == 0 or elapsed >= bound:
            steps.append(Delete(g.group, name))
            events.append(_deleted(g, left, elapsed, bound))
            continue
        if any(p.serving for p in pods):
            steps.append(Retire(g.group, name, g.retiring_since or ""))
        count = "requests" if left is None else f"{left} request(s)"
        waiting.append(f"draining {g.group.name}: {count} in flight ({elapsed:.0f}s of {bound}s)")
    return tuple(steps), "; ".join(waiting), tuple(events)


def _shrink(
    g: EngineGroup, snap: Snapshot, now: datetime, bound: int
) -> tuple[list[Step], list[str], list[Event]]:
    """The resize that ends a shrink once its retired replicas are drained (or at the bound),
    or a shrink again for those that got the serving label back, and what it waits for."""
    assert g.shrink_to is not None
    tp = g.group.tensor_parallel
    name = group_statefulset_name(snap.owner.name, g.group)
    pods = [p for p in snap.pods if p.group == g.group.name and p.ordinal >= g.shrink_to]
    elapsed = seconds_since(g.shrink_since, now) or 0.0
    left = in_flight(pods, snap.load)
    if left == 0 or elapsed >= bound:
        smaller = Group(g.group.name, g.shrink_to * tp, tp)
        how = f"drained in {elapsed:.0f}s" if left == 0 else f"after the drain bound ({bound}s)"
        message = f"shrank engine group {g.group.name} to {g.shrink_to} replica(s): {how}"
        kind = "Normal" if left == 0 else "Warning"
        reason = "GroupResized" if left == 0 else "DrainTimedOut"
        return [Resize(smaller, name)], [], [Event(kind, reason, message)]
    steps: list[Step] = []
    if any(p.serving for p in pods):
        steps.append(Shrink(g.group, name, g.shrink_to, g.shrink_since or ""))
    count = "requests" if left is None else f"{left} request(s)"
    wait = f"draining replicas of {g.group.name}: {count} in flight ({elapsed:.0f}s of {bound}s)"
    return steps, [wait], []


def _deleted(g: EngineGroup, left: int | None, elapsed: float, bound: int) -> Event:
    if left == 0:
        message = f"deleted engine group {g.group.name}: drained in {elapsed:.0f}s"
        return Event("Normal", "GroupDeleted", message)
    count = "an unknown number of" if left is None else str(left)
    message = (
        f"deleted engine group {g.group.name} after the drain bound ({bound}s) with {count} "
        "request(s) in flight: its engines get drainTimeoutSeconds to finish them"
    )
    return Event("Warning", "DrainTimedOut", message)
