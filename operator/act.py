"""act: apply a Decision as it is (server-side applies, deletes, the status patch, events).

Nothing here decides. A child already as applied and unchanged since is not applied again
(drift.py). Children are applied concurrently in two waves: what the workloads refer
to (ServiceAccount, RBAC, Services, PDB, NetworkPolicy), then the workloads and the steps. A
child the API server refuses (4xx other than conflicts) is returned with the server's message,
for the pass to report; other failures raise ClusterError and the pass is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from scaleserve.operator import status
from scaleserve.operator.builders import (
    LABEL_GROUP,
    LABEL_GROUP_GPUS,
    LABEL_SERVING,
    Manifest,
    Owner,
)
from scaleserve.operator.cluster import utcnow
from scaleserve.operator.decide import (
    Create,
    Decision,
    Delete,
    Event,
    Resize,
    Retire,
    Serve,
    Shrink,
)
from scaleserve.operator.errors import ClusterError
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.snapshot import (
    ANNOTATION_RETIRING,
    ANNOTATION_SHRINK_SINCE,
    ANNOTATION_SHRINK_TO,
)

REFUSED = {400, 403, 422}  # the server will not take this object as it is: retrying won't help


def child_name(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def server_message(exc: ClusterError) -> str:
    return str(exc).split(f": {exc.status} ", 1)[-1]


async def apply_all(rt: Runtime, manifests: Sequence[Manifest]) -> dict[str, str]:
    """Apply concurrently the children not already as applied (drift.py); returns the refused
    ones with the server's message."""
    due = [m for m in manifests if not rt.drift.current(m)]
    results = await asyncio.gather(*(rt.kube.apply(m) for m in due), return_exceptions=True)
    refused: dict[str, str] = {}
    for manifest, result in zip(due, results, strict=True):
        if isinstance(result, ClusterError) and result.status in REFUSED:
            refused[child_name(manifest)] = server_message(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            rt.drift.record(manifest, result)
            rt.cluster.assume(result)
    return refused


async def _create(rt: Runtime, step: Create, reservation: dict[str, Any] | None) -> dict[str, str]:
    """Apply a new group; its reservation (the GPUs promised while placing it) is taken back
    if the API server does not take the group."""
    refused: dict[str, str] = {}
    try:
        refused = await apply_all(rt, [step.manifest])
    except BaseException:
        if reservation is not None:
            rt.cluster.release(reservation)
        raise
    if refused and reservation is not None:
        rt.cluster.release(reservation)
    return refused


async def _delete(rt: Runtime, owner: Owner, step: Delete) -> None:
    await rt.kube.delete("StatefulSet", owner.namespace, step.statefulset)
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    rt.cluster.assume_deleted(owner.namespace, step.statefulset, stamp)


async def _retire(rt: Runtime, owner: Owner, step: Retire) -> None:
    """Record when the group was retired (first: a pass that stops halfway retires it again
    with the same time), then take its pods out of the engine Service."""
    body = {"metadata": {"annotations": {ANNOTATION_RETIRING: step.since}}}
    sts = await rt.kube.patch("StatefulSet", owner.namespace, step.statefulset, body)
    # never applied again: its changes from now on are no drift
    rt.drift.forget(("StatefulSet", owner.namespace, step.statefulset))
    if sts is not None:
        rt.cluster.assume(sts)
    await _label_pods(rt, owner, step.group.name, None)


async def _shrink(rt: Runtime, owner: Owner, step: Shrink) -> None:
    """Record the shrink (first, as a retire), then take the pods from ordinal `replicas` up
    out of the engine Service."""
    annotations = {ANNOTATION_SHRINK_TO: str(step.replicas), ANNOTATION_SHRINK_SINCE: step.since}
    body = {"metadata": {"annotations": annotations}}
    sts = await rt.kube.patch("StatefulSet", owner.namespace, step.statefulset, body)
    if sts is not None:
        rt.cluster.assume(sts)
    await _label_pods(rt, owner, step.group.name, None, step.replicas)


async def _resize(rt: Runtime, step: Resize, namespace: str) -> None:
    """Set the group's replicas and size; a finished shrink's record goes with it."""
    body = {
        "metadata": {
            "labels": {LABEL_GROUP_GPUS: str(step.group.size)},
            "annotations": {ANNOTATION_SHRINK_TO: None, ANNOTATION_SHRINK_SINCE: None},
        },
        "spec": {"replicas": step.group.replicas},
    }
    sts = await rt.kube.patch("StatefulSet", namespace, step.statefulset, body)
    if sts is not None:
        rt.cluster.assume(sts)


async def _label_pods(
    rt: Runtime, owner: Owner, group: str, value: str | None, first: int = 0
) -> None:
    """Set (or, with None, remove) the serving label on a group's pods (from ordinal `first`)."""
    body = {"metadata": {"labels": {LABEL_SERVING: value}}}
    pods = [
        p["metadata"]["name"]
        for p in rt.cluster.endpoint_pods(owner.namespace, owner.name, "engine")
        if (p["metadata"].get("labels") or {}).get(LABEL_GROUP) == group
        and _ordinal(p["metadata"]["name"]) >= first
    ]
    await asyncio.gather(*(rt.kube.patch("Pod", owner.namespace, n, body) for n in pods))


def _ordinal(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def run_steps(
    rt: Runtime, owner: Owner, decision: Decision, reservations: Mapping[str, dict[str, Any]]
) -> dict[str, str]:
    """Deletes and retires first, then creates (decide has already ordered and gated them)."""
    refused: dict[str, str] = {}
    for step in decision.steps:
        if isinstance(step, Delete):
            await _delete(rt, owner, step)
        elif isinstance(step, Retire):
            await _retire(rt, owner, step)
        elif isinstance(step, Serve):
            await _label_pods(rt, owner, step.group.name, "true")
        elif isinstance(step, Shrink):
            await _shrink(rt, owner, step)
        elif isinstance(step, Resize):
            await _resize(rt, step, owner.namespace)
        else:
            refused |= await _create(rt, step, reservations.get(step.group.name))
    return refused


async def act(
    rt: Runtime,
    owner: Owner,
    old: Mapping[str, Any],
    decision: Decision,
    emit: Emit,
    reservations: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Apply the decision's children and steps; returns the children the server refused (then
    the status is left to the caller, which reports them)."""
    reservations = reservations or {}
    refused = await apply_all(rt, decision.config)
    if not refused:
        if any(isinstance(s, Delete) for s in decision.steps):
            # applied after a delete, a group's StatefulSet would be created again
            refused = await apply_all(rt, decision.workloads)
            refused |= await run_steps(rt, owner, decision, reservations)
        else:  # new groups are created while the others are applied
            done = await asyncio.gather(
                run_steps(rt, owner, decision, reservations), apply_all(rt, decision.workloads)
            )
            refused = done[0] | done[1]
    if not refused:
        if decision.config or decision.workloads:
            rt.applied((owner.namespace, owner.name))
        await write_status(rt, owner, old, decision.status, decision.events, emit)
    return refused


async def write_status(
    rt: Runtime,
    owner: Owner,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    events: Sequence[Event],
    emit: Emit,
) -> None:
    """Post the events and patch the status if it changed."""
    for event in events:
        emit(event.type, event.reason, event.message)
    rt.metrics.endpoint(owner.namespace, owner.name, new)
    if status.changed(old, new):
        # the UID is a precondition: a late pass over a deleted endpoint never writes its state
        # into a new endpoint of the same name
        await rt.kube.patch_status(
            owner.namespace, owner.name, dict(new), uid=owner.uid, has_status=bool(old)
        )
        rt.written[(owner.namespace, owner.name)] = (owner.uid, {**old, **new})
