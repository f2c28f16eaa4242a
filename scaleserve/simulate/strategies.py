"""Strategies compared on the same traffic: static layouts, a replica autoscaler with TP fixed
(what KServe, KubeAI or KEDA do, on in-flight requests) and scaleserve's own modes.

A strategy starts an endpoint's first groups (Ready at t=0: every run starts warm) and, every
`interval_s`, looks at the endpoint and acts on it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from scaleserve.operator.decide import Create, Delete, Resize, Retire, Shrink
from scaleserve.operator.layout import Group, GroupShape, describe, group_name
from scaleserve.operator.snapshot import EngineGroup, PendingPod
from scaleserve.simulate.control import Control, created_hash, reshape_started
from scaleserve.simulate.endpoint import Endpoint, SimGroup
from scaleserve.simulate.nodes import Nodes

GOING = ("draining", "terminating")  # a deleted group's states until it is gone


class Strategy:
    name = "strategy"
    interval_s = 10.0
    gpu_limit = 0  # most GPUs it may ever hold
    ours = False  # scaleserve's: never dark after the first Ready
    reshapes = 0

    def start(self, now: float, endpoint: Endpoint) -> None:
        raise NotImplementedError

    def tick(self, now: float, endpoint: Endpoint) -> None:
        """Called every interval_s."""


@dataclass
class Static(Strategy):
    shapes: tuple[GroupShape, ...]

    def __post_init__(self) -> None:
        self.name = f"static {describe(self.shapes)}"
        self.gpu_limit = sum(s.size for s in self.shapes)

    def start(self, now: float, endpoint: Endpoint) -> None:
        for i, shape in enumerate(self.shapes):
            endpoint.create(now, f"g{i}-tp{shape.tensor_parallel}", shape, warm=True)


@dataclass
class ReplicaAutoscaler(Strategy):
    """HPA-like on in-flight requests per replica (KEDA's AverageValue target): desired =
    ceil(in-flight / target), 10% tolerance, scale-up at most max(2x, +4) per sync, scale-down
    to the highest recommendation of the last `stabilization_s` (HPA's defaults)."""

    tensor_parallel: int
    target_in_flight: float
    max_gpus: int
    min_replicas: int = 1
    interval_s: float = 15.0
    stabilization_s: float = 300.0
    tolerance: float = 0.1
    _recent: deque[tuple[float, int]] = field(default_factory=deque)
    _next: int = 0

    def __post_init__(self) -> None:
        self.name = f"replica autoscaler TP{self.tensor_parallel}"
        self.gpu_limit = self.max_gpus

    def start(self, now: float, endpoint: Endpoint) -> None:
        for _ in range(self.min_replicas):
            self._add(now, endpoint, warm=True)

    def _add(self, now: float, endpoint: Endpoint, *, warm: bool = False) -> None:
        shape = GroupShape(self.tensor_parallel, self.tensor_parallel)
        endpoint.create(now, f"r{self._next}", shape, warm=warm)
        self._next += 1

    def tick(self, now: float, endpoint: Endpoint) -> None:
        live = [g for g in endpoint.groups.values() if g.state not in GOING]
        current = len(live)
        load = endpoint.take_in_flight_avg(now)
        desired = current
        if current == 0 or abs(load / (current * self.target_in_flight) - 1) > self.tolerance:
            desired = math.ceil(load / self.target_in_flight)
        top = self.max_gpus // self.tensor_parallel
        desired = max(self.min_replicas, min(desired, top, max(2 * current, current + 4)))
        self._recent.append((now, desired))
        while self._recent[0][0] < now - self.stabilization_s:
            self._recent.popleft()
        if desired < current:
            desired = min(current, max(d for _, d in self._recent))
        if desired != current:
            self.reshapes += 1
        # a pod beyond the cluster's GPUs (draining pods still hold theirs) would stay Pending:
        # it is created once there is room
        room = (self.max_gpus - endpoint.gpus) // self.tensor_parallel
        for _ in range(min(desired - current, room)):
            self._add(now, endpoint)
        # scale-down removes the newest replicas first (a starting one before a Ready one)
        for group in sorted(live, key=lambda g: g.created, reverse=True)[: current - desired]:
            endpoint.delete(now, group.name)


@dataclass
class Scaleserve(Strategy):
    """scaleserve's operator (decide, through the adapter in control.py) on a cluster of
    `cluster_gpus` in nodes of the spec's perNode GPUs, which the endpoint has to itself."""

    control: Control
    cluster_gpus: int
    mode: str = "thresholds"
    interval_s: float = 10.0  # the operator's reconcile interval (--reconcile-interval)
    started: list[float] = field(default_factory=list)  # when each ReshapeStarted was posted

    def __post_init__(self) -> None:
        self.name = f"scaleserve {self.mode}"
        self.gpu_limit = self.control.limit
        self.ours = True
        self.nodes = Nodes(self.cluster_gpus, self.control.spec.gpu.per_node)

    def start(self, now: float, endpoint: Endpoint) -> None:
        endpoint.on_removed = self._removed
        endpoint.on_replica_removed = self._replica_removed
        for i, shape in enumerate(self.control.initial()):
            node = self.nodes.bind(shape.size, None)
            assert node is not None, "the cluster has no room for the first groups"
            name = group_name(i, shape.tensor_parallel)
            hash_ = self.control.pod_hash(shape)
            endpoint.create(now, name, shape, warm=True, node=node, pod_hash=hash_)

    def _removed(self, group: SimGroup) -> None:
        if group.node is not None:
            self.nodes.release(group.node, group.shape.size, terminating=True)

    def _replica_removed(self, group: SimGroup, gpus: int) -> None:
        if group.node is not None:
            self.nodes.release(group.node, gpus, terminating=True)

    def _resize(self, now: float, endpoint: Endpoint, step: Shrink | Resize) -> None:
        """A shrink drains its replicas at once (as a retire does, below); a resize grows the
        group (the resize ending a shrink finds it at its size already)."""
        group = endpoint.groups.get(step.group.name)
        if group is None or group.state != "ready":
            return
        tp = step.group.tensor_parallel
        if isinstance(step, Shrink) and step.replicas < group.shape.replicas:
            if group.node is not None:
                self.nodes.terminate(group.node, group.shape.size - tp * step.replicas)
            endpoint.shrink(now, step.group.name, step.replicas)
        elif isinstance(step, Resize) and step.group.size > group.shape.size:
            added = step.group.size - group.shape.size
            if group.node is not None and self.nodes.bind(added, group.node) is None:
                return  # decide checked its node's room; the pods would stay Pending
            endpoint.grow(now, step.group.name, step.group.shape)

    def tick(self, now: float, endpoint: Endpoint) -> None:
        for g in [g for g in endpoint.groups.values() if g.state == "pending"]:
            node = self.nodes.bind(g.shape.size, None)  # the scheduler, once there is room
            if node is not None:
                endpoint.start(now, g.name, node)
        decision = self.control.step(
            now,
            [o for g in endpoint.groups.values() for o in observed(g)],
            endpoint.take_in_flight_avg(now),
            self.nodes.free,
            [
                PendingPod(f"{g.name}-0", g.name, now - g.created, "no node has room")
                for g in endpoint.groups.values()
                if g.state == "pending"
            ],
        )
        if reshape_started(decision):
            self.reshapes += 1
            self.started.append(now)
        for step in decision.steps:
            # a retired group drains at once and goes when its streams end (the gateways'
            # /stats are not modelled, so the operator's wait for them collapses into that)
            if isinstance(step, Shrink | Resize):
                self._resize(now, endpoint, step)
            elif isinstance(step, Retire | Delete):
                group = endpoint.groups.get(step.group.name)
                if group is None or group.state in GOING:
                    continue
                if group.node is not None:
                    self.nodes.terminate(group.node, group.shape.size)
                endpoint.delete(now, step.group.name)
            elif isinstance(step, Create):
                node = self.nodes.bind(step.group.size, step.node)
                shape, hash_ = step.group.shape, created_hash(step)
                endpoint.create(
                    now, step.group.name, shape, node=node, pod_hash=hash_, pending=node is None
                )


def observed(g: SimGroup) -> list[EngineGroup]:
    """A simulated group as observe reads its StatefulSet (draining or terminating: being
    deleted), and a shrink's retired replicas, draining or terminating, as terminating pods
    (their GPUs held)."""
    replicas, tp = g.shape.replicas, g.shape.tensor_parallel
    out = [
        EngineGroup(
            Group(g.name, g.shape.size, tp),
            g.node,
            replicas,
            len(g.replicas) if g.state == "ready" else 0,
            g.state in GOING,
            g.pod_hash,
        )
    ]
    if g.retired or g.stopping:
        n = len(g.retired) + len(g.stopping)
        out.append(EngineGroup(Group(f"{g.name}-retired", n * tp, tp), g.node, n, 0, True))
    return out
