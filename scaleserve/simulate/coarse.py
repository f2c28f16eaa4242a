"""The coarse engine model, for many endpoints over long spans: one step per operator pass.

Per pass each endpoint gets a request rate; the gateway splits it over the serving replicas by
their weight (TP), as its routing does in steady state. A replica taking lam requests/s runs at
the concurrency c where c / latency(c) = lam (Little's law; latency(c) = ttft(c) + (osl - 1)
x tbt(c) from the profile); above its most throughput the excess waits in a backlog whose
drain time adds to TTFT. Groups start (startupSeconds), serve, drain (for one request's
latency) and go, as in the fine model, on nodes of a cluster the endpoints share; the operator's
decide runs through the same adapter.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from scaleserve.operator.decide import Delete, Resize, Retire, Serve, Shrink
from scaleserve.operator.layout import Group, GroupShape, group_name
from scaleserve.operator.snapshot import EngineGroup, PendingPod
from scaleserve.profiles import DegreeProfile, Profile
from scaleserve.simulate.control import Control, created_hash, reshape_started
from scaleserve.simulate.nodes import Nodes


@dataclass(frozen=True)
class Curve:
    """One degree's steady state by concurrency: throughput (req/s) and latencies (s)."""

    concurrency: tuple[int, ...]
    throughput: tuple[float, ...]  # non-decreasing (a replica never does worse by queueing)
    ttft: tuple[float, ...]
    tbt: tuple[float, ...]

    @classmethod
    def of(cls, degree: DegreeProfile, output_tokens: int, max_seqs: int) -> Curve:
        cs, xs, ttfts, tbts, best = [], [], [], [], 0.0
        c = 1
        while c <= max_seqs:
            ttft, tbt = degree.ttft_ms(c) / 1000, degree.tbt_ms(c) / 1000
            best = max(best, c / (ttft + (output_tokens - 1) * tbt))
            cs.append(c)
            xs.append(best)
            ttfts.append(ttft)
            tbts.append(tbt)
            c = c + 1 if c < 64 else int(c * 1.125)
        return cls(tuple(cs), tuple(xs), tuple(ttfts), tuple(tbts))

    def at(self, rate: float) -> tuple[float, float, float, float]:
        """(concurrency, served req/s, ttft s, tbt s) for an offered rate."""
        i = min(bisect.bisect_left(self.throughput, rate), len(self.throughput) - 1)
        served = min(rate, self.throughput[i])
        return (
            self.concurrency[i] * served / max(self.throughput[i], 1e-9),
            served,
            self.ttft[i],
            self.tbt[i],
        )


@dataclass
class CoarseGroup:
    name: str
    shape: GroupShape
    ready_at: float | None  # None: pending, no node has room for it yet
    node: str | None
    pod_hash: str | None
    gone_at: float | None = None  # set when deleted: it drains until then
    created: float = 0.0
    added: int = 0  # replicas a grow in place added, Ready at added_at
    added_at: float = 0.0

    def ready_replicas(self, now: float) -> int:
        if self.ready_at is None or self.ready_at > now:
            return 0
        return self.shape.replicas - (self.added if self.added_at > now else 0)


@dataclass
class CoarseEndpoint:
    control: Control
    nodes: Nodes  # shared with the other endpoints
    curves: dict[int, Curve]
    startup: dict[int, float]
    output_tokens: int
    groups: dict[str, CoarseGroup] = field(default_factory=dict)
    backlog: float = 0.0
    ever_ready: bool = False
    dark_passes: int = 0

    def gpus(self) -> int:
        return sum(g.shape.size for g in self.groups.values() if g.node is not None)

    def serving(self, now: float) -> list[CoarseGroup]:
        return [
            g
            for g in self.groups.values()
            if g.ready_at is not None and g.ready_at <= now and g.gone_at is None
        ]

    def observed(self, now: float) -> list[EngineGroup]:
        """The groups as observe reads their StatefulSets (draining: being deleted)."""
        out = []
        for g in self.groups.values():
            n = g.shape.replicas
            group = Group(g.name, g.shape.size, g.shape.tensor_parallel)
            ready = g.ready_replicas(now)
            out.append(EngineGroup(group, g.node, n, ready, g.gone_at is not None, g.pod_hash))
        return out


@dataclass(frozen=True)
class PassResult:
    in_flight: float
    served: float  # req/s
    ttft_s: float
    tbt_s: float


def serve(endpoint: CoarseEndpoint, now: float, rate: float, dt: float) -> PassResult:
    """One interval of traffic at `rate` req/s on the endpoint's serving replicas."""
    for name in [
        n for n, g in endpoint.groups.items() if g.gone_at is not None and g.gone_at <= now
    ]:
        gone = endpoint.groups.pop(name)
        if gone.node is not None:
            endpoint.nodes.release(gone.node, gone.shape.size, terminating=True)
    serving = endpoint.serving(now)
    if serving:
        endpoint.ever_ready = True
    elif endpoint.ever_ready:
        endpoint.dark_passes += 1
    offered = rate + endpoint.backlog / dt
    weight = sum(g.ready_replicas(now) * g.shape.tensor_parallel for g in serving)
    in_flight = served = ttft = tbt = 0.0
    for g in serving:
        tp, n = g.shape.tensor_parallel, g.ready_replicas(now)
        c, x, t1, t2 = endpoint.curves[tp].at(offered * tp / weight)
        in_flight += n * c
        served += n * x
        ttft = max(ttft, t1)
        tbt = max(tbt, t2)
    endpoint.backlog = max(offered - served, 0.0) * dt
    if served > 0:
        ttft += endpoint.backlog / served  # the backlog's wait before its first token
    return PassResult(in_flight + endpoint.backlog, served, ttft, tbt)


def act(endpoint: CoarseEndpoint, now: float, result: PassResult) -> bool:
    """One operator pass (decide on the endpoint's snapshot), its steps applied; True when a
    reshape started."""
    nodes = endpoint.nodes
    for g in endpoint.groups.values():
        if g.node is None and g.gone_at is None:  # the scheduler, once there is room
            g.node = nodes.bind(g.shape.size, None)
            if g.node is not None:
                g.ready_at = now + endpoint.startup[g.shape.tensor_parallel]
    pending = [
        PendingPod(f"{g.name}-0", g.name, now - g.created, "no node has room")
        for g in endpoint.groups.values()
        if g.node is None
    ]
    decision = endpoint.control.step(
        now, endpoint.observed(now), result.in_flight, nodes.free, pending
    )
    drain = result.ttft_s + (endpoint.output_tokens - 1) * result.tbt_s
    for step in decision.steps:
        if isinstance(step, Serve):
            continue  # simulated pods always carry the serving label
        if isinstance(step, Shrink | Resize):
            _resize(endpoint, now, step, drain)
            continue
        if isinstance(step, Retire | Delete):  # drains at once, as in strategies.py
            g = endpoint.groups[step.group.name]
            if g.gone_at is not None:
                continue
            serving = g.ready_at is not None and g.ready_at <= now
            g.gone_at = now + min(drain, 30.0) if serving else now  # nothing to drain
            if g.node is not None:
                nodes.terminate(g.node, g.shape.size)
            continue
        shape = step.group.shape
        node = nodes.bind(shape.size, step.node)
        ready = now + endpoint.startup[shape.tensor_parallel] if node is not None else None
        endpoint.groups[step.group.name] = CoarseGroup(
            step.group.name, shape, ready, node, created_hash(step), created=now
        )
    return reshape_started(decision)


def _resize(endpoint: CoarseEndpoint, now: float, step: Shrink | Resize, drain: float) -> None:
    """A shrink splits the retired replicas off as a draining group (as a retire drains, above);
    a resize grows the group in place (the resize ending a shrink finds it at its size)."""
    g = endpoint.groups.get(step.group.name)
    if g is None or g.gone_at is not None or g.ready_replicas(now) < g.shape.replicas:
        return
    tp = g.shape.tensor_parallel
    if isinstance(step, Shrink) and step.replicas < g.shape.replicas:
        retired = GroupShape(g.shape.size - step.replicas * tp, tp)
        name = f"{g.name}-retired-{now:.0f}"
        endpoint.groups[name] = CoarseGroup(
            name, retired, g.ready_at, g.node, g.pod_hash, now + min(drain, 30.0), now
        )
        if g.node is not None:
            endpoint.nodes.terminate(g.node, retired.size)
        g.shape = GroupShape(step.replicas * tp, tp)
    elif isinstance(step, Resize) and step.group.size > g.shape.size:
        added = step.group.size - g.shape.size
        if g.node is not None and endpoint.nodes.bind(added, g.node) is None:
            return  # decide checked its node's room; the pods would stay Pending
        g.added, g.added_at = added // tp, now + endpoint.startup[tp]
        g.shape = step.group.shape


def endpoint_for(
    control: Control, profile: Profile, nodes: Nodes, max_seqs: int = 1024
) -> CoarseEndpoint:
    """An endpoint whose first groups are Ready at t=0 on `nodes`."""
    osl = profile.workload.output_tokens
    curves = {d.tensor_parallel: Curve.of(d, osl, max_seqs) for d in profile.degrees}
    startup = {d.tensor_parallel: d.startup_seconds for d in profile.degrees}
    endpoint = CoarseEndpoint(control, nodes, curves, startup, osl)
    for i, shape in enumerate(control.initial()):
        name = group_name(i, shape.tensor_parallel)
        node = nodes.bind(shape.size, None)
        assert node is not None, "the cluster has no room for the first groups"
        endpoint.groups[name] = CoarseGroup(name, shape, 0.0, node, control.pod_hash(shape))
    return endpoint
