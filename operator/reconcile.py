"""Reconcile one LLMEndpoint: observe, decide the layout, plan, execute one safe step, report.

Everything the operator needs to resume lives in the cluster: the engine StatefulSets (groups,
their TP degree, size and node) and the CR's status (target layout and when it was chosen), so
a restarted operator picks a half-done reshape up where it stopped. Steps are executed only
when safe: a new group is created and must be ready before an old one is deleted; with a
transition that deletes, only one new group is in flight at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scaleserve.operator import cluster, status
from scaleserve.operator.builders import (
    LABEL_GROUP,
    Observed,
    Owner,
    PlacedGroup,
    desired,
    gateway_name,
    gateway_url,
)
from scaleserve.operator.concurrency import endpoint_key, read_concurrency, stats_urls
from scaleserve.operator.errors import InvalidSpecError, StatsUnavailableError
from scaleserve.operator.executor import execute
from scaleserve.operator.layout import (
    Current,
    Layout,
    choose_layout,
    describe,
    group_shapes,
    seconds_since_reshape,
)
from scaleserve.operator.placement import placeable
from scaleserve.operator.planner import plan_transition
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.spec import EndpointSpec, SpecError, parse_spec

__all__ = ["Emit", "Runtime", "reconcile"]


@dataclass
class Target:
    layout: Layout
    since: str | None
    concurrency: float | None
    note: str = ""


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    return (now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _inferred(groups: list[cluster.EngineGroup]) -> Layout | None:
    degrees = {g.group.tensor_parallel for g in groups}
    if len(degrees) != 1:
        return None
    return Layout(sum(g.group.replicas for g in groups), degrees.pop())


async def _sample(rt: Runtime, ns: str, name: str) -> float | None:
    pods = rt.cluster.endpoint_pods(ns, name, "gateway")
    urls = stats_urls(rt.settings.stats_url, ns, name, pods)
    try:
        return await read_concurrency(rt.http, urls)
    except StatsUnavailableError:
        return None


async def _target(
    rt: Runtime,
    spec: EndpointSpec,
    meta: Mapping[str, Any],
    old: Mapping[str, Any],
    live: list[cluster.EngineGroup],
    hold: bool,
    emit: Emit,
    now: datetime,
) -> Target:
    if spec.layout is not None:
        return Target(Layout(spec.layout.replicas, spec.layout.tensor_parallel), None, None)
    policy = spec.autoscaling
    assert policy is not None
    key = endpoint_key(meta)
    value = await _sample(rt, meta["namespace"], meta["name"])
    mono = rt.clock()
    if value is not None:
        rt.windows.add(key, mono, value, policy.window_seconds)
    window = rt.windows.get(key, mono, policy.window_seconds)
    seen = round(window.mean, 2) if window.mean is not None else old.get("observedConcurrency")
    previous = Layout.parse(old.get("targetLayout") or "") or _inferred(live)
    since = old.get("lastReshapeTime")
    if hold and previous is not None:
        return Target(previous, since, seen, "holding the layout while degraded")
    elapsed = seconds_since_reshape(
        _seconds_since(since, now), _seconds_since(old.get("lastReshapeCompletedTime"), now)
    )
    reshaping = previous is not None and not _at_layout(live, previous, spec.gpu.per_node)
    decision = choose_layout(policy, window, Current(previous, elapsed, reshaping))
    if decision.changed:
        if previous is not None:
            emit("Normal", "ReshapeStarted", f"{previous} -> {decision.layout}: {decision.reason}")
        return Target(decision.layout, _stamp(now), seen, decision.reason)
    return Target(decision.layout, since, seen, decision.reason)


def _at_layout(live: list[cluster.EngineGroup], layout: Layout, per_node: int) -> bool:
    """Whether the groups are exactly `layout`'s and all ready (its reshape is complete)."""
    shapes = sorted(g.group.shape for g in live)
    return shapes == sorted(group_shapes(layout, per_node)) and all(g.is_ready for g in live)


WORKLOADS = ("StatefulSet", "Deployment")


async def _apply(rt: Runtime, manifests: list[dict[str, Any]]) -> None:
    """Apply children concurrently (one round trip, not one per child)."""
    for applied in await asyncio.gather(*(rt.kube.apply(m) for m in manifests)):
        rt.cluster.assume(applied)


async def reconcile(
    rt: Runtime, body: Mapping[str, Any], emit: Emit, *, full_apply: bool
) -> dict[str, Any]:
    """One pass over an endpoint; returns the status it wrote (or would have)."""
    meta, old = body["metadata"], dict(body.get("status") or {})
    ns, name = meta["namespace"], meta["name"]
    async with rt.lock((ns, name)):
        uid, last = rt.written.get((ns, name), ("", {}))
        if uid == meta["uid"]:
            old.update(last)
        return await _reconcile(rt, body, meta, old, emit, full_apply=full_apply)


async def _reconcile(
    rt: Runtime,
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    old: dict[str, Any],
    emit: Emit,
    *,
    full_apply: bool,
) -> dict[str, Any]:
    ns, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    now = cluster.utcnow()
    owner = Owner(name, ns, meta["uid"])
    try:
        spec = parse_spec(body.get("spec"))
    except SpecError as exc:
        await _write_status(
            rt, ns, name, meta["uid"], old, _invalid_status(old, str(exc), now, generation)
        )
        raise InvalidSpecError(str(exc)) from None
    groups = rt.cluster.engine_groups(ns, name, owner.uid)
    live = [g for g in groups if not g.terminating]
    rollout: list[dict[str, Any]] = []  # the workloads, applied below
    if full_apply or generation != old.get("observedGeneration"):
        placed = [PlacedGroup(g.group, g.node) for g in live]
        manifests = desired(spec, Observed(owner, placed))
        # first what the workloads refer to (ServiceAccount, RBAC, Services, ...), so no pod
        # is created before its ServiceAccount
        await _apply(rt, [m for m in manifests if m["kind"] not in WORKLOADS])
        rollout = [m for m in manifests if m["kind"] in WORKLOADS]

    pending: list[cluster.PendingPod] = []
    if any(not g.is_ready for g in live):
        pods = rt.cluster.endpoint_pods(ns, name, "engine")
        pending = cluster.pending_pods(pods, now)
    stuck = [p for p in pending if p.seconds >= rt.settings.pending_grace_s]

    target = await _target(rt, spec, meta, old, live, bool(stuck), emit, now)
    shapes = group_shapes(target.layout, spec.gpu.per_node)
    held = sum(g.group.size for g in live)
    if spec.autoscaling is not None:
        limit = spec.autoscaling.gpu_budget + spec.autoscaling.surge_gpus
    else:
        limit = max(held, sum(s.size for s in shapes)) + max(s.size for s in shapes)
    current = [g.group for g in live]
    plan = plan_transition(current, shapes, 1 << 30, gpu_limit=limit)
    waiting = ""
    if not plan.done:
        nodes = rt.cluster.node_free_gpus(spec)
        size = max(s.size for s in shapes)
        free = placeable(size, nodes.now)
        releasing = placeable(size, nodes.after_release) - free
        pods = rt.cluster.endpoint_pods(ns, name, "engine")
        in_use = {(p["metadata"].get("labels") or {}).get(LABEL_GROUP, "") for p in pods}
        in_use |= {g.group.name for g in groups if g.terminating}
        plan = plan_transition(
            current,
            shapes,
            free,
            gpu_limit=limit,
            avoid_names=in_use,
            releasing_gpus=max(0, releasing),
        )
        if plan.disruptive and old.get("message") != plan.summary:
            emit("Warning", "NoSpareGPUs", plan.summary)
        if any(s.action == "delete" for s in plan.steps):
            # applied after a delete, a group's StatefulSet would be created again
            await _apply(rt, rollout)
            waiting = await execute(rt, spec, owner, live, plan, limit, emit)
        else:  # new groups are placed while the others roll out
            waiting, _ = await asyncio.gather(
                execute(rt, spec, owner, live, plan, limit, emit), _apply(rt, rollout)
            )
    else:
        await _apply(rt, rollout)

    groups = rt.cluster.engine_groups(ns, name, owner.uid) if not plan.done else groups
    live = [g for g in groups if not g.terminating]
    ready_replicas = sum(min(g.ready, g.replicas) for g in live)
    gateways = rt.cluster.gateway_ready(ns, gateway_name(name))
    serving = ready_replicas > 0 and gateways > 0
    all_ready = bool(live) and all(g.is_ready for g in live)
    reshaping = not plan.done
    degraded = bool(stuck)
    if reshaping:
        message = plan.summary + (f"; {waiting}" if waiting else "")
    elif not all_ready:
        message = f"at {target.layout}; waiting for engine groups to become ready"
    else:
        message = f"serving at {target.layout}"
    if target.note and spec.autoscaling is not None:
        message += f" ({target.note})"
    if degraded:
        worst = max(stuck, key=lambda p: p.seconds)
        message = (
            f"{len(stuck)} engine pod(s) Pending for more than {rt.settings.pending_grace_s:.0f}s "
            f"(e.g. {worst.name}: {worst.message}); {message}"
        )
    was_reshaping = any(
        c.get("type") == "Reshaping" and c.get("status") == "True"
        for c in old.get("conditions") or []
    )
    if was_reshaping and not reshaping and all_ready:
        emit("Normal", "ReshapeCompleted", f"now serving at {target.layout}")
    was_degraded = old.get("phase") == "Degraded"
    if degraded and not was_degraded:
        emit("Warning", "Degraded", message)
    new: dict[str, Any] = {
        "phase": status.phase(
            groups=len(live),
            ready=serving and all_ready,
            reshaping=reshaping,
            degraded=degraded,
            initial=old.get("phase") in (None, "Pending", "Deploying"),
        ),
        "currentLayout": describe(g.group for g in live),
        "targetLayout": str(target.layout),
        "readyReplicas": ready_replicas,
        "replicas": sum(g.replicas for g in live),
        "gpus": sum(g.group.size for g in live),
        "url": gateway_url(owner),
        "message": message,
        "observedGeneration": generation,
    }
    if target.concurrency is not None:
        new["observedConcurrency"] = target.concurrency
    if target.since is not None:
        new["lastReshapeTime"] = target.since
    completed = status.reshape_completed(
        old.get("lastReshapeCompletedTime"), target.since, not reshaping and all_ready, _stamp(now)
    )
    if completed is not None:
        new["lastReshapeCompletedTime"] = completed
    new["conditions"] = status.conditions(
        old.get("conditions") or [],
        [
            status.Condition(
                "Ready",
                serving,
                "Serving" if serving else "NotServing",
                f"{ready_replicas} engine replica(s) and {gateways} gateway(s) ready",
            ),
            status.Condition(
                "Reshaping",
                reshaping,
                "Transition" if reshaping else "AtTarget",
                plan.summary if reshaping else f"at {target.layout}",
            ),
            status.Condition(
                "Degraded",
                degraded,
                "PodsPending" if degraded else "AsExpected",
                message if degraded else "no engine pods stuck Pending",
            ),
        ],
        _stamp(now),
        generation,
    )
    await _write_status(rt, ns, name, meta["uid"], old, new)
    return new


def _invalid_status(
    old: Mapping[str, Any], message: str, now: datetime, generation: int | None
) -> dict[str, Any]:
    return {
        "phase": "Degraded",
        "message": message,
        "observedGeneration": generation,
        "conditions": status.conditions(
            old.get("conditions") or [],
            [status.Condition("Degraded", True, "InvalidSpecError", message)],
            _stamp(now),
            generation,
        ),
    }


async def _write_status(
    rt: Runtime, ns: str, name: str, uid: str, old: Mapping[str, Any], new: dict[str, Any]
) -> None:
    rt.metrics.endpoint(ns, name, new)
    if status.changed(old, new):
        # the UID is a precondition: a late pass over a deleted endpoint never writes its state
        # into a new endpoint of the same name
        await rt.kube.patch_status(ns, name, new, uid=uid, has_status=bool(old))
        rt.written[(ns, name)] = (uid, {**old, **new})
