"""When a retired engine group goes (pure).

A group leaving the layout is first retired: its pods lose the label the engine Service selects,
so the gateways stop sending it new requests while the streams they have open go on. It is
deleted once every gateway reports no request in flight on its pods and none still routing new
ones there, or once `spec.rollout.drainSeconds` have passed since it was retired (the time is
on its StatefulSet, so a restarted operator keeps it); its engines then get their own SIGTERM
drain (drainTimeoutSeconds) for whatever is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from scaleserve.operator.builders import group_statefulset_name
from scaleserve.operator.rollout import Delete, Retire, Serve, Step
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
    steps: list[Step] = [
        Serve(g.group)
        for g in snap.serving
        if any(p.group == g.group.name and not p.serving for p in snap.pods)
    ]
    waiting: list[str] = []
    events: list[Event] = []
    bound = spec.rollout.drain_seconds
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
