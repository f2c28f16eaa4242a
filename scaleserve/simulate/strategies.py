"""Strategies compared on the same traffic: static layouts, a replica autoscaler with TP fixed
(what KServe, KubeAI or KEDA do, on in-flight requests) and scaleserve's own modes.

A strategy starts an endpoint's first groups (Ready at t=0: every run starts warm) and, every
`interval_s`, looks at the endpoint and acts on it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from scaleserve.operator.layout import Group, GroupShape, describe
from scaleserve.simulate.control import Control, LiveGroup, View
from scaleserve.simulate.endpoint import Endpoint


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
        live = [g for g in endpoint.groups.values() if g.state != "draining"]
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
    """scaleserve's operator (through the adapter in control.py) on a cluster of `cluster_gpus`."""

    control: Control
    cluster_gpus: int
    mode: str = "thresholds"

    def __post_init__(self) -> None:
        self.name = f"scaleserve {self.mode}"
        self.gpu_limit = self.control.limit
        self.ours = True

    def start(self, now: float, endpoint: Endpoint) -> None:
        for i, shape in enumerate(self.control.initial()):
            endpoint.create(now, f"g{i}-tp{shape.tensor_parallel}", shape, warm=True)

    def tick(self, now: float, endpoint: Endpoint) -> None:
        live: list[tuple[Group, bool]] = []
        draining: list[tuple[Group, bool]] = []
        for g in endpoint.groups.values():
            group = Group(g.name, g.shape.size, g.shape.tensor_parallel)
            (draining if g.state == "draining" else live).append((group, g.state == "ready"))
        view = View(
            groups=tuple(LiveGroup(g, ready) for g, ready in live),
            draining_gpus=sum(g.size for g, _ in draining),
            draining_names=tuple(g.name for g, _ in draining),
            in_flight_avg=endpoint.take_in_flight_avg(now),
            free_gpus=max(self.cluster_gpus - endpoint.gpus, 0),
        )
        steps = self.control.step(now, view)
        self.reshapes += steps.reshape_started
        for name in steps.deletes:
            endpoint.delete(now, name)
        for group in steps.creates:
            endpoint.create(now, group.name, group.shape)
