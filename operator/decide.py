"""One pure decision per pass: `decide(spec, snapshot, now) -> Decision`.

decide reads nothing but its arguments and does no I/O (an import-linter contract keeps it and
everything below it free of kopf, Kubernetes clients and aiohttp). It returns the target layout,
only the steps that are safe now (every make-before-break gate lives in rollout.py), the
children to apply, the new status and the events; act.py applies them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from scaleserve.operator import status
from scaleserve.operator.builders import Manifest, Observed, PlacedGroup, desired, gateway_url
from scaleserve.operator.drain import drain_steps
from scaleserve.operator.layout import Group, GroupShape, Layout, describe
from scaleserve.operator.placement import NodeGPUs, placeable
from scaleserve.operator.planner import Plan, plan_transition
from scaleserve.operator.rollout import (
    Create,
    Delete,
    Resize,
    Retire,
    Serve,
    Shrink,
    Step,
    pod_hash,
    safe_steps,
    stamped,
)
from scaleserve.operator.scaling import choose_objectives
from scaleserve.operator.snapshot import EngineGroup, Snapshot
from scaleserve.operator.spec import EndpointSpec
from scaleserve.operator.target import Chooser, Event, Target, choose_target, stamp

WORKLOADS = ("StatefulSet", "Deployment")
UNLIMITED = 1 << 30

__all__ = [
    "Create",
    "Decision",
    "Delete",
    "Event",
    "Resize",
    "Retire",
    "Serve",
    "Shrink",
    "Step",
    "decide",
    "rejected",
]


@dataclass(frozen=True)
class Decision:
    """What one pass does. config: children applied first (what the workloads refer to);
    workloads: the existing groups' StatefulSets (only those running the current pod spec) and
    the gateway Deployment; needs_free_gpus: decide needs free GPUs per node to go on."""

    target: Layout | None  # None: a policy's mix of degrees (see Target)
    steps: tuple[Step, ...] = ()
    config: tuple[Manifest, ...] = ()
    workloads: tuple[Manifest, ...] = ()
    status: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    needs_free_gpus: bool = False


def gpu_limit(spec: EndpointSpec, live: Sequence[EngineGroup], shapes: Sequence[GroupShape]) -> int:
    """Most GPUs the endpoint may hold at once: budget + surge, or (static layouts) what it
    holds or needs plus one group, as far as the cluster has room."""
    if spec.autoscaling is not None:
        return spec.autoscaling.budget + spec.autoscaling.surge_gpus
    held = sum(g.group.size for g in live)
    return max(held, sum(s.size for s in shapes)) + max(s.size for s in shapes)


def chooser(spec: EndpointSpec) -> Chooser:
    """The spec's policy: objectives mode's, or the static layout's and thresholds mode's."""
    if spec.autoscaling is not None and spec.autoscaling.mode == "objectives":
        return choose_objectives
    return choose_target


@dataclass(frozen=True)
class _Moves:
    """What a pass does towards the target: the plan, the steps safe now, what the next step
    waits for, why the rollout holds ("" if it does not), and the events."""

    plan: Plan
    steps: tuple[Step, ...] = ()
    waiting: str = ""
    held: str = ""
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class _Course:
    """The groups planned with and the shapes planned for, as one pass sees them."""

    live: list[EngineGroup]  # serving groups, a shrinking one at its new size
    shapes: tuple[GroupShape, ...]
    hashes: dict[GroupShape, str]  # pod-spec hash per shape
    stale: set[str]  # live groups not running the current pod spec
    limit: int  # most GPUs the endpoint may hold at once


def decide(
    spec: EndpointSpec, snap: Snapshot, now: datetime, choose: Chooser | None = None
) -> Decision:
    """choose: the policy picking the target (the spec's, unless a caller brings its own);
    every step towards it is decided here whatever picked it."""
    choose = choose or chooser(spec)
    drains, draining, events = drain_steps(spec, snap, now)
    stuck = [p for p in snap.pending if p.seconds >= snap.pending_grace_s]
    target, more = choose(spec, snap, bool(stuck), now)
    course = _course(spec, snap, target)
    current = [g.group for g in course.live]
    plan = plan_transition(
        current, course.shapes, UNLIMITED, gpu_limit=course.limit, stale=course.stale
    )
    if plan.done:
        moves = _Moves(plan)
    elif snap.free is None:
        return Decision(target.layout, needs_free_gpus=True)
    else:
        moves = _moves(spec, snap, course, str(target), now)
    steps = drains + moves.steps
    after = _after(course.live, steps)
    shrinking = {g.group.name for g in snap.serving if g.shrink_to is not None}
    resized = {s.group.name for s in steps if isinstance(s, Resize)}
    stale = course.stale | (shrinking - resized)
    config, workloads = _manifests(spec, snap, after, stale, course.hashes)
    # the transition lasts until retired groups are gone, the one deleted now included
    draining = draining or ("deleting retired groups" if snap.retiring else "")
    draining = draining or ("resizing engine groups" if shrinking else "")
    progress = _progress(after, moves.plan, moves.waiting, moves.held, stuck, snap, draining)
    progress = replace(progress, problem=target.problem)
    new, ends = _status(spec, snap, target, progress, now)
    events += more + moves.events + ends
    return Decision(target.layout, steps, config, workloads, new, events)


def _course(spec: EndpointSpec, snap: Snapshot, target: Target) -> _Course:
    # retiring groups are on their way out: not planned with, but holding their GPUs and names;
    # a shrinking group is planned with at its new size, its retired replicas' GPUs held
    live = [_shrunk(g) for g in snap.serving]
    shapes = target.groups(spec.gpu.per_node)
    hashes = {s: pod_hash(spec, snap.owner, s) for s in {*shapes, *(g.group.shape for g in live)}}
    stale = {g.group.name for g in live if g.pod_hash != hashes[g.group.shape]}
    return _Course(live, shapes, hashes, stale, gpu_limit(spec, live, shapes))


def _moves(
    spec: EndpointSpec, snap: Snapshot, course: _Course, target: str, now: datetime
) -> _Moves:
    """The plan with the free GPUs per node (snap.free is set), and its steps safe now; a plan
    that would take the endpoint dark holds unless the spec allows disruption."""
    assert snap.free is not None
    live, shapes, limit = course.live, course.shapes, course.limit
    # no shape left (scale to zero): nothing is created, any size will do
    size = max((s.size for s in shapes), default=spec.gpu.per_node)
    free = placeable(size, snap.free.now)
    releasing = max(0, placeable(size, snap.free.after_release) - free)
    plan = plan_transition(
        [g.group for g in live],
        shapes,
        free,
        gpu_limit=limit,
        avoid_names=snap.names_in_use | {g.group.name for g in snap.retiring},
        releasing_gpus=releasing,
        stale=course.stale,
        room=_room(live, snap.free.now, free),
    )
    if plan.disruptive and not spec.rollout.allow_disruption:
        held = hold_message(spec, live, target, shapes, limit)
        repeat = snap.status.get("message") == held
        return _Moves(
            plan, held=held, events=() if repeat else (Event("Warning", "RolloutHeld", held),)
        )
    events: tuple[Event, ...] = ()
    if plan.disruptive and snap.status.get("message") != plan.summary:
        events = (Event("Warning", "NoSpareGPUs", plan.summary),)
    steps, waiting, more = safe_steps(
        spec,
        snap.owner,
        live,
        plan,
        snap.free,
        limit=limit,
        orphan_gpus=_held_back(snap, live),
        hashes=course.hashes,
        since=stamp(now),
    )
    return _Moves(plan, steps, waiting, "", events + more)


def _held_back(snap: Snapshot, live: Sequence[EngineGroup]) -> int:
    """GPUs held by nothing the plan counts: orphan pods, retiring groups, and the replicas a
    shrink under way retires."""
    held = snap.orphan_gpus + sum(g.group.size for g in snap.retiring)
    return held + sum(a.group.size - b.group.size for a, b in zip(snap.serving, live, strict=True))


def hold_message(
    spec: EndpointSpec,
    live: Sequence[EngineGroup],
    target: str,
    shapes: Sequence[GroupShape],
    limit: int,
) -> str:
    """Why a single-group endpoint keeps its pods, and what lets it proceed."""
    need = max(s.size for s in shapes)
    now = describe(g.group for g in live)
    same = sorted(g.group.shape for g in live) == sorted(shapes)
    what = "replacing it with the current spec" if same else f"a reshape to {target}"
    held = sum(g.group.size for g in live)
    if spec.autoscaling is not None and held + need > limit:
        fix = f"set spec.autoscaling.surgeGPUs to {need}"
    else:
        fix = "free GPUs on an eligible node"
    return (
        f"holding {now}: {what} needs {need} spare GPUs; {fix}, "
        "or set spec.rollout.allowDisruption to replace it with downtime"
    )


def _shrunk(g: EngineGroup) -> EngineGroup:
    """A group as it will be once its shrink under way is done."""
    if g.shrink_to is None:
        return g
    tp = g.group.tensor_parallel
    group = Group(g.group.name, g.shrink_to * tp, tp)
    return replace(g, group=group, replicas=g.shrink_to, ready=min(g.ready, g.shrink_to))


def _room(live: Sequence[EngineGroup], nodes: Sequence[NodeGPUs], free: int) -> dict[str, int]:
    """GPUs each group can grow by in place: free on its node (anywhere, when unpinned)."""
    on = {n.name: n.free for n in nodes}
    return {g.group.name: on.get(g.node, 0) if g.node else free for g in live}


def _after(live: Sequence[EngineGroup], steps: Sequence[Step]) -> list[EngineGroup]:
    """The groups serving once this pass's steps are applied (new ones not ready yet)."""
    gone = {s.group.name for s in steps if isinstance(s, Retire | Delete)}
    sizes = {s.group.name: s.group for s in steps if isinstance(s, Resize)}
    out = [
        replace(g, group=sizes[g.group.name], replicas=sizes[g.group.name].replicas, shrink_to=None)
        if g.group.name in sizes
        else g
        for g in live
        if g.group.name not in gone
    ]
    for s in steps:
        if isinstance(s, Create):
            out.append(EngineGroup(s.group, s.node, s.group.replicas, 0, False))
    return out


def _manifests(
    spec: EndpointSpec,
    snap: Snapshot,
    after: Sequence[EngineGroup],
    stale: set[str],
    hashes: Mapping[GroupShape, str],
) -> tuple[tuple[Manifest, ...], tuple[Manifest, ...]]:
    """Every child but new groups, when this pass re-applies them. A stale group's StatefulSet
    is left as it is: its pods are replaced by a new group, never rolled in place."""
    if not snap.apply_all and snap.generation == snap.status.get("observedGeneration"):
        return (), ()
    new = {g.group.name for g in after if g.group.name not in {x.group.name for x in snap.serving}}
    kept = [
        PlacedGroup(g.group, g.node)
        for g in after
        if g.group.name not in stale and g.group.name not in new
    ]
    manifests = desired(spec, Observed(snap.owner, kept))
    groups = {f"{snap.owner.name}-{p.group.name}": p.group for p in kept}
    for m in manifests:
        if m["kind"] == "StatefulSet":
            stamped(m, hashes, groups[m["metadata"]["name"]])
    config = tuple(m for m in manifests if m["kind"] not in WORKLOADS)
    return config, tuple(m for m in manifests if m["kind"] in WORKLOADS)


def _progress(
    after: Sequence[EngineGroup],
    plan: Plan,
    waiting: str,
    held: str,
    stuck: Sequence[Any],
    snap: Snapshot,
    draining: str,
) -> status.Progress:
    """draining: what retired groups wait for; the transition lasts until they are gone."""
    stuck_text = ""
    if stuck:
        worst = max(stuck, key=lambda p: p.seconds)
        stuck_text = (
            f"{len(stuck)} engine pod(s) Pending for more than {snap.pending_grace_s:.0f}s "
            f"(e.g. {worst.name}: {worst.message})"
        )
    return status.Progress(
        ready_replicas=sum(min(g.ready, g.replicas) for g in after),
        replicas=sum(g.replicas for g in after),
        gpus=sum(g.group.size for g in after),
        current_layout=describe(g.group for g in after),
        all_ready=bool(after) and all(g.is_ready for g in after),
        transition=plan.summary
        if not plan.done
        else ("retired groups draining" if draining else ""),
        waiting="; ".join(w for w in (waiting, draining) if w),
        held=held,
        stuck=stuck_text,
        rejected=_rejected_text(snap.rejected),
    )


def _rejected_text(rejected: Mapping[str, str]) -> str:
    if not rejected:
        return ""
    return "; ".join(f"the API server rejected {child}: {why}" for child, why in rejected.items())


def _status(
    spec: EndpointSpec, snap: Snapshot, target: Target, p: status.Progress, now: datetime
) -> tuple[dict[str, Any], tuple[Event, ...]]:
    old = snap.status
    new = status.build(
        old,
        p,
        target=str(target),
        note=target.note,
        gateways=snap.gateways_ready,
        generation=snap.generation,
        now=stamp(now),
    )
    new["url"] = gateway_url(snap.owner)
    new.update(target.status)
    if spec.autoscaling is not None:
        policy = spec.autoscaling
        bounds = f"{policy.least}-{policy.budget}" if policy.mode == "objectives" else ""
        new["gpuUsage"] = f"{p.gpus}/{policy.budget}"
        if bounds:
            new["gpuBounds"] = bounds
    # fields of a mode the spec left (a merge patch removes them)
    for key in ("mode", "gpuUsage", "gpuBounds", "idleSince", "objectives"):
        if key not in new and old.get(key) is not None:
            new[key] = None
    if target.concurrency is not None:
        new["observedConcurrency"] = target.concurrency
    if target.since is not None:
        new["lastReshapeTime"] = target.since
    done = not p.transition and p.all_ready
    completed = status.reshape_completed(
        old.get("lastReshapeCompletedTime"), target.since, done, stamp(now)
    )
    if completed is not None:
        new["lastReshapeCompletedTime"] = completed
    return new, _status_events(old, new, done)


def _status_events(old: Mapping[str, Any], new: Mapping[str, Any], done: bool) -> tuple[Event, ...]:
    events: list[Event] = []
    was_reshaping = any(
        c.get("type") == "Reshaping" and c.get("status") == "True"
        for c in old.get("conditions") or []
    )
    if was_reshaping and done:
        events.append(Event("Normal", "ReshapeCompleted", f"now serving at {new['targetLayout']}"))
    if new["phase"] == "Degraded" and _degraded_reason(old) != _degraded_reason(new):
        events.append(Event("Warning", "Degraded", new["message"]))
    return tuple(events)


def _degraded_reason(status_: Mapping[str, Any]) -> str | None:
    """Why the endpoint is degraded (None: it is not): a new reason is worth a new event."""
    if status_.get("phase") != "Degraded":
        return None
    for c in status_.get("conditions") or []:
        if c.get("type") == "Degraded":
            return str(c.get("reason"))
    return ""


def rejected(
    spec: EndpointSpec, snap: Snapshot, refused: Mapping[str, str], now: datetime
) -> Decision:
    """The decision once the API server refused children (child -> its message): the same
    pass, Degraded and quoting the server, with nothing more to apply."""
    again = decide(spec, replace(snap, rejected=refused, apply_all=False), now)
    return replace(again, steps=(), config=(), workloads=())
