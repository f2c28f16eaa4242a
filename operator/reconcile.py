"""One pass over an LLMEndpoint: observe -> decide -> act.

Everything needed to resume lives in the cluster: the engine StatefulSets (groups, their TP
degree, size, node and pod-spec hash) and the status (target layout and when it was chosen),
so a restarted operator picks a half-done rollout up where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from scaleserve.operator import status
from scaleserve.operator.act import act, write_status
from scaleserve.operator.builders import Owner
from scaleserve.operator.cluster import utcnow
from scaleserve.operator.decide import Create, Decision, decide, rejected
from scaleserve.operator.errors import ChildRejectedError, InvalidSpecError
from scaleserve.operator.observe import (
    last_status,
    observe,
    read_profile,
    replica_load,
    sample,
)
from scaleserve.operator.runtime import Emit, Runtime
from scaleserve.operator.scaling import trend_seconds
from scaleserve.operator.snapshot import Snapshot
from scaleserve.operator.spec import EndpointSpec, SpecError
from scaleserve.operator.target import stamp

__all__ = ["Emit", "Runtime", "reconcile"]


async def reconcile(
    rt: Runtime, body: Mapping[str, Any], emit: Emit, *, full_apply: bool
) -> Mapping[str, Any]:
    """One pass over an endpoint; returns the status it wrote (or would have)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    async with rt.lock(key):
        old = last_status(rt, body)
        now = utcnow()
        try:
            spec = rt.spec(body)
        except SpecError as exc:
            await _invalid(rt, meta, old, str(exc), now)
            raise InvalidSpecError(str(exc)) from None
        profile, why = await read_profile(rt, spec, meta["namespace"])
        window, held, latency = await sample(rt, spec, meta, trend_seconds(spec, profile))
        snap = observe(rt, spec, body, old, window, now, full_apply=full_apply)
        snap = replace(
            snap,
            load=await replica_load(rt, snap),
            held=held,
            latency=latency,
            profile=profile,
            profile_error=why,
        )
        snap, decision, reservations = await _decide(rt, spec, snap, now)
        refused = await act(rt, snap.owner, old, decision, emit, reservations)
        if refused:
            delay = rt.refused(key, refused)
            decision = rejected(spec, snap, refused, now)
            events = [e for e in decision.events if e.reason == "Degraded"]
            await write_status(rt, snap.owner, old, decision.status, events, emit)
            raise ChildRejectedError("; ".join(f"{c}: {m}" for c, m in refused.items()), delay)
        return decision.status


async def _decide(
    rt: Runtime, spec: EndpointSpec, snap: Snapshot, now: datetime
) -> tuple[Snapshot, Decision, dict[str, dict[str, Any]]]:
    """decide; when it needs free GPUs per node, observe them and decide again under the
    placement lock, and reserve the new groups' GPUs in the cache before the lock is released,
    so two endpoints reconciled at once are never promised the same GPUs."""
    decision = decide(spec, snap, now)
    if not decision.needs_free_gpus:
        return snap, decision, {}
    async with rt.placement:
        snap = replace(snap, free=rt.cluster.node_free_gpus(spec))
        decision = decide(spec, snap, now)
        reservations = {
            s.group.name: rt.cluster.reserve(s.manifest)
            for s in decision.steps
            if isinstance(s, Create)
        }
    return snap, decision, reservations


async def _invalid(
    rt: Runtime, meta: Mapping[str, Any], old: Mapping[str, Any], message: str, now: datetime
) -> None:
    generation = meta.get("generation")
    new = {
        "phase": "Degraded",
        "message": message,
        "observedGeneration": generation,
        "conditions": status.conditions(
            old.get("conditions") or [],
            [status.Condition("Degraded", True, "InvalidSpecError", message)],
            stamp(now),
            generation,
        ),
    }
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    await write_status(rt, owner, old, new, (), lambda *_: None)
