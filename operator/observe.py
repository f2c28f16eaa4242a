"""observe: one immutable Snapshot of an endpoint from the watched caches and the gateways.

The only I/O of a pass before act is here: the gateways' /stats (the concurrency sample of
autoscaled endpoints). Everything else comes from ClusterView's caches and the runtime's
in-memory state (the last status written, the children the API server refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scaleserve.latency import Measured
from scaleserve.operator.builders import LABEL_GROUP, Owner, gateway_name
from scaleserve.operator.concurrency import (
    endpoint_key,
    read_concurrency,
    read_replica_load,
    stats_urls,
)
from scaleserve.operator.errors import ClusterError, StatsUnavailableError
from scaleserve.operator.layout import Window
from scaleserve.operator.placement import pod_gpus
from scaleserve.operator.runtime import Runtime
from scaleserve.operator.scaling import check_profile
from scaleserve.operator.snapshot import ReplicaLoad, Snapshot, engine_pods, pending_pods
from scaleserve.operator.spec import EndpointSpec
from scaleserve.profiles import Profile, ProfileError, parse_profile


def last_status(rt: Runtime, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body's status updated with the last one this operator wrote: only the operator writes
    the status, so that is newer than a body read before the write (a timer's, or a pass that
    waited for the endpoint's lock)."""
    meta, old = body["metadata"], dict(body.get("status") or {})
    uid, last = rt.written.get((meta["namespace"], meta["name"]), ("", {}))
    if uid == meta["uid"]:
        old.update(last)
    return old


async def sample(
    rt: Runtime, spec: EndpointSpec, meta: Mapping[str, Any], trend_s: float = 0.0
) -> tuple[Window | None, int, Measured | None]:
    """Add the gateways' in-flight requests to the endpoint's window (autoscaled endpoints);
    returns the window (its trend over `trend_s` when longer), the requests the gateways hold
    (no engine replica ready) and the latency they measured, from the same /stats read."""
    policy = spec.autoscaling
    if policy is None:
        return None, 0, None
    ns, name = meta["namespace"], meta["name"]
    pods = rt.cluster.endpoint_pods(ns, name, "gateway")
    key, mono = endpoint_key(meta), rt.clock()
    try:
        load = await read_concurrency(rt.http, stats_urls(rt.settings.stats_url, ns, name, pods))
    except StatsUnavailableError:
        load = None
    keep = max(policy.window_seconds, trend_s)
    if load is not None:
        rt.windows.add(key, mono, load.in_flight, keep)
    window = rt.windows.get(key, mono, policy.window_seconds, trend_s)
    return window, load.held if load else 0, load.latency if load else None


async def read_profile(
    rt: Runtime, spec: EndpointSpec, namespace: str
) -> tuple[Profile | None, str]:
    """Objectives mode's performance profile, inline or from its ConfigMap key (read each
    pass, so an edited ConfigMap takes effect without touching the endpoint), checked against
    the spec's objectives; (None, why) when it cannot be used."""
    policy = spec.autoscaling
    if policy is None or policy.mode != "objectives" or policy.profile is None:
        return None, ""
    ref, where = policy.profile.config_map, "spec.autoscaling.profile.inline"
    try:
        if ref is None:
            profile = parse_profile(policy.profile.inline)
        else:
            where = f"ConfigMap {ref.name} key {ref.key}"
            cm = await rt.kube.get("ConfigMap", namespace, ref.name)
            if cm is None:
                return None, f"{where}: ConfigMap not found"
            text = (cm.get("data") or {}).get(ref.key)
            if text is None:
                return None, f"{where}: no such key"
            profile = parse_profile(text)
        check_profile(spec, profile)
    except (ProfileError, ClusterError) as exc:
        return None, f"{where}: {exc}"
    return profile, ""


async def replica_load(rt: Runtime, snap: Snapshot) -> dict[str, ReplicaLoad] | None:
    """The gateways' report per engine pod, read only while a group is retiring or shrinking
    (its drain waits on it)."""
    if not snap.retiring and not any(g.shrink_to is not None for g in snap.live):
        return None
    ns, name = snap.owner.namespace, snap.owner.name
    pods = rt.cluster.endpoint_pods(ns, name, "gateway")
    return await read_replica_load(rt.http, stats_urls(rt.settings.stats_url, ns, name, pods))


def observe(
    rt: Runtime,
    spec: EndpointSpec,
    body: Mapping[str, Any],
    old: Mapping[str, Any],
    window: Window | None,
    now: datetime,
    *,
    full_apply: bool,
) -> Snapshot:
    """The endpoint as the caches hold it now (free GPUs per node are added on demand)."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    owner = Owner(name, ns, meta["uid"])
    groups = tuple(rt.cluster.engine_groups(ns, name, owner.uid))
    live = {g.group.name for g in groups if not g.terminating}
    pods = rt.cluster.endpoint_pods(ns, name, "engine")
    labels = [(p["metadata"].get("labels") or {}).get(LABEL_GROUP, "") for p in pods]
    orphans = sum(
        pod_gpus(p, spec.gpu.resource_name)
        for p, group in zip(pods, labels, strict=True)
        if group not in live
    )
    unready = any(g.ready < g.replicas for g in groups if not g.terminating)
    return Snapshot(
        owner=owner,
        generation=meta.get("generation"),
        status=dict(old),
        groups=groups,
        gateways_ready=rt.cluster.gateway_ready(ns, gateway_name(name)),
        pending=tuple(pending_pods(pods, now)) if unready else (),
        pending_grace_s=rt.settings.pending_grace_s,
        orphan_gpus=orphans,
        names_in_use=frozenset(labels) | {g.group.name for g in groups if g.terminating},
        window=window,
        apply_all=full_apply or rt.resync_due((ns, name)),
        rejected=dict(rt.rejected.get((ns, name), {})),
        pods=engine_pods(pods),
    )
