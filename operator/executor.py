"""Execute the safe steps of a transition plan: create (pinned) and delete engine groups.

A delete waits until every new group is ready; while a transition deletes, at most one new
group is in flight; a create waits while deleted groups' pods still hold GPUs that would push
the endpoint over its limit, while no node has room now but one will once terminating pods are
gone, and (when no node has room at all) while pinned groups' pods are not bound yet.
"""

from __future__ import annotations

from typing import Any

from scaleserve.operator import cluster
from scaleserve.operator.builders import (
    LABEL_GROUP,
    Observed,
    Owner,
    PlacedGroup,
    desired,
    group_statefulset_name,
)
from scaleserve.operator.placement import choose_node, pod_gpus
from scaleserve.operator.planner import Plan
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.spec import EndpointSpec


def _held_gpus(live: list[cluster.EngineGroup], pods: list[dict[str, Any]], resource: str) -> int:
    """GPUs the endpoint holds: its groups, plus pods of deleted groups still terminating."""
    names = {g.group.name for g in live}
    orphans = sum(
        pod_gpus(p, resource)
        for p in pods
        if (p["metadata"].get("labels") or {}).get(LABEL_GROUP) not in names
        and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
    )
    return sum(g.group.size for g in live) + orphans


async def execute(
    rt: Runtime,
    spec: EndpointSpec,
    owner: Owner,
    live: list[cluster.EngineGroup],
    plan: Plan,
    limit: int,
    emit: Emit,
) -> str:
    """Run the plan's steps that are safe now; returns what is being waited for."""
    not_ready = {g.group.name for g in live if not g.is_ready}
    deletes = any(s.action == "delete" for s in plan.steps)
    ready_names = sorted({g.group.name for g in live} - not_ready)
    live = list(live)
    for step in plan.steps:
        name = step.group.name
        if step.action == "delete":
            if not_ready - {name}:
                return f"waiting for {', '.join(sorted(not_ready - {name}))} to become ready"
            sts = group_statefulset_name(owner.name, step.group)
            await rt.kube.delete("StatefulSet", owner.namespace, sts)
            stamp = cluster.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            rt.cluster.engines.assume_deleted(owner.namespace, sts, stamp)
            others = [n for n in ready_names if n != name]
            why = f"{', '.join(others)} serving" if others else "no spare GPUs"
            emit("Normal", "GroupDeleted", f"deleted engine group {name} ({why})")
            not_ready.discard(name)
            live = [g for g in live if g.group.name != name]
            continue
        if not_ready and deletes:
            return f"waiting for {', '.join(sorted(not_ready))} to become ready"
        pods = rt.cluster.endpoint_pods(owner.namespace, owner.name, "engine")
        held = _held_gpus(live, pods, spec.gpu.resource_name)
        if deletes and held + step.group.size > limit:
            return f"waiting for deleted engine pods to release GPUs before creating {name}"
        async with rt.placement:
            free = rt.cluster.node_free_gpus(spec)
            node = choose_node(step.group.size, free.now)
            if node is None and choose_node(step.group.size, free.after_release) is not None:
                # make-before-break: wait for terminating pods rather than create it unpinned
                return f"waiting for terminating pods to release GPUs before creating {name}"
            if node is None and free.promised:
                # an unpinned group could take GPUs promised to a pinned one before that
                # group's pods are scheduled, stranding them: create it once they are bound
                return f"waiting for pinned groups to be scheduled before creating {name}"
            placed = PlacedGroup(step.group, node)
            manifest = desired(spec, Observed(owner, (placed,)))
            statefulset = next(m for m in manifest if m["kind"] == "StatefulSet")
            # from here the GPUs count as promised: the group is in the cache before the API
            # server has it, so the lock does not have to span the round trip
            reservation = rt.cluster.reserve(statefulset)
        try:
            applied = await rt.kube.apply(statefulset)
        except BaseException:
            rt.cluster.release(reservation)
            raise
        rt.cluster.assume(applied)
        if node is None:
            emit(
                "Warning",
                "NoGPUs",
                f"no node has {step.group.size} free GPUs for group {name}; it stays Pending",
            )
        where = f"on node {node}" if node else "unpinned"
        emit(
            "Normal",
            "GroupCreated",
            f"created engine group {name}: {step.group.replicas}x TP{step.group.tensor_parallel} "
            f"{where}",
        )
        not_ready.add(name)
        if deletes:
            return f"waiting for {name} to become ready"
    return ""
