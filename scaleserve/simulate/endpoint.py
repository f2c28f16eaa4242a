"""One LLMEndpoint in simulated time: its engine groups, the gateway in front of them (the
real routing policy picks each replica), draining, and the accounting of GPUs and requests.

A group is created (its GPUs held from then on; one that no node has room for yet is pending
and holds none until it starts), turns Ready after its degree's startupSeconds, and is deleted
by draining: it gets no new work at once and goes when its last request finishes, or at the
drain bound, when what is left is aborted; its pods then terminate (`Limits.termination_s`:
the preStop sleep, the engine's exit, the kubelet's removal), their GPUs held until they are
gone. With no serving replica the gateway holds requests (bounded count and time) and sends
them in order to the first replica that turns Ready.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scaleserve.gateway.routing import ReplicaState, RouteRequest, Snapshot, get_policy
from scaleserve.operator.builders.engine import PRESTOP_SLEEP_S
from scaleserve.operator.layout import GroupShape, describe
from scaleserve.profiles import Profile
from scaleserve.simulate.engine import Replica, Request
from scaleserve.simulate.events import EventQueue


@dataclass
class SimGroup:
    name: str
    shape: GroupShape
    created: float
    replicas: list[Replica] = field(default_factory=list)
    state: str = "starting"  # pending | starting | ready | draining | terminating
    node: str | None = None
    pod_hash: str | None = None
    adding: list[Replica] = field(default_factory=list)  # a grow in place's, starting
    retired: list[Replica] = field(default_factory=list)  # a shrink in place's, draining
    stopping: list[Replica] = field(default_factory=list)  # retired and drained, terminating

    @property
    def gpus(self) -> int:
        """GPUs its pods hold: its size (starting replicas included) and retired replicas
        (draining or terminating)."""
        return (
            self.shape.size + (len(self.retired) + len(self.stopping)) * self.shape.tensor_parallel
        )

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)


@dataclass(frozen=True)
class Limits:
    max_seqs: int = 1024  # per replica (vLLM's max_num_seqs)
    drain_timeout_s: float = 30.0
    hold_s: float = 300.0  # how long the gateway holds a request with no replica serving
    hold_max: int = 10_000
    # from a drained pod's deletion to its GPUs free: at least the engine pod's preStop sleep
    termination_s: float = float(PRESTOP_SLEEP_S)


class Endpoint:
    def __init__(
        self,
        events: EventQueue,
        profile: Profile,
        *,
        routing: str = "least-in-flight",
        limits: Limits | None = None,
        seed: int = 0,
    ) -> None:
        self.events = events
        self.profile = profile
        self.limits = limits or Limits()
        self.choose = get_policy(routing)
        self.groups: dict[str, SimGroup] = {}
        self.serving: list[Replica] = []
        self.held: deque[Request] = deque()
        self.finished: list[Request] = []
        self.rejected: list[Request] = []
        self.arrived = 0
        self.in_flight = 0
        self.on_end: Callable[[float, Request], None] | None = None  # closed-loop streams
        self.on_removed: Callable[[SimGroup], None] | None = None  # its GPUs are free again
        # a shrink's retired replica is gone: its group, and the GPUs free again
        self.on_replica_removed: Callable[[SimGroup, int], None] | None = None
        self._replicas_made = 0
        self._rng = random.Random(seed)
        self._seq = 0
        self._last = 0.0
        self._in_flight_area = 0.0
        self._area_since = 0.0
        self.gpu_seconds = 0.0
        self.idle_gpu_seconds = 0.0  # held by groups starting or draining
        self.ever_ready = False
        self.dark_events: list[float] = []  # zero ready replicas after the first Ready
        self.max_gpus = 0
        self.timeline: list[tuple[float, int, int, str]] = []  # t, gpus, ready replicas, layout
        self.history: list[tuple[float, str, str]] = []  # t, group, state it entered ("gone")

    # accounting ------------------------------------------------------------------------
    def _account(self, now: float) -> None:
        dt = now - self._last
        if dt > 0:
            self._in_flight_area += self.in_flight * dt
            held = self.gpus
            self.gpu_seconds += held * dt
            ready = sum(len(g.replicas) * g.shape.tensor_parallel for g in self._ready_groups())
            self.idle_gpu_seconds += (held - ready) * dt
        self._last = now

    def _ready_groups(self) -> list[SimGroup]:
        return [g for g in self.groups.values() if g.state == "ready"]

    @property
    def gpus(self) -> int:
        return sum(g.gpus for g in self.groups.values() if g.state != "pending")

    def take_in_flight_avg(self, now: float) -> float:
        """Time-averaged in-flight requests since the last call (the gateways' in_flight_avg)."""
        self._account(now)
        span = now - self._area_since
        value = self._in_flight_area / span if span > 0 else float(self.in_flight)
        self._in_flight_area, self._area_since = 0.0, now
        return value

    def _changed(self, now: float, group: SimGroup | None = None) -> None:
        if group is not None:
            state = group.state if self.groups.get(group.name) is group else "gone"
            self.history.append((now, group.name, state))
        self.serving = [r for g in self._ready_groups() for r in g.replicas]
        ready = len(self.serving)
        if ready:
            self.ever_ready = True
        elif self.ever_ready:
            self.dark_events.append(now)
        self.max_gpus = max(self.max_gpus, self.gpus)
        self.timeline.append(
            (now, self.gpus, ready, describe(g.shape for g in self.groups.values()))
        )

    # groups ----------------------------------------------------------------------------
    def create(
        self,
        now: float,
        name: str,
        shape: GroupShape,
        *,
        warm: bool = False,
        node: str | None = None,
        pod_hash: str | None = None,
        pending: bool = False,
    ) -> None:
        """A new group; `warm` groups are Ready at once (the run starts with them serving),
        `pending` ones wait for `start` (no node has room for them yet)."""
        self._account(now)
        degree = self.profile.degree(shape.tensor_parallel)
        if degree is None:
            raise ValueError(f"the profile has no tensorParallel {shape.tensor_parallel}")
        group = SimGroup(name, shape, now, node=node, pod_hash=pod_hash)
        group.replicas = self._replicas(name, shape.tensor_parallel, shape.replicas)
        self.groups[name] = group
        if warm:
            self._ready(now, group)
        elif pending:
            group.state = "pending"
            self._changed(now, group)
        else:
            self.start(now, name, node)

    def _replicas(self, name: str, tensor_parallel: int, count: int) -> list[Replica]:
        degree = self.profile.degree(tensor_parallel)
        assert degree is not None
        made = []
        for _ in range(count):
            self._replicas_made += 1
            made.append(
                Replica(
                    f"{name}/{self._replicas_made}",
                    degree,
                    self.profile.workload.input_tokens,
                    self.events,
                    self._done,
                    max_seqs=self.limits.max_seqs,
                )
            )
        return made

    def grow(self, now: float, name: str, shape: GroupShape) -> None:
        """A resize in place: the added replicas load and join the group once Ready."""
        self._account(now)
        group = self.groups[name]
        added = self._replicas(name, shape.tensor_parallel, shape.replicas - group.shape.replicas)
        group.shape = shape
        group.adding += added
        self._changed(now)
        degree = self.profile.degree(shape.tensor_parallel)
        assert degree is not None
        self.events.schedule(now + degree.startup_seconds, self._grown, (group, added))

    def _grown(self, now: float, item: tuple[SimGroup, list[Replica]]) -> None:
        group, added = item
        if self.groups.get(group.name) is not group or group.state != "ready":
            return
        self._account(now)
        group.adding = [r for r in group.adding if r not in added]
        group.replicas += added
        self._changed(now)
        while self.held and self.serving:
            self._route(now, self.held.popleft())

    def shrink(self, now: float, name: str, replicas: int) -> None:
        """A shrink in place: the highest replicas get no new work now and go once idle or at
        the drain bound."""
        self._account(now)
        group = self.groups[name]
        tp = group.shape.tensor_parallel
        retired = group.replicas[replicas:]
        group.replicas = group.replicas[:replicas]
        group.retired += retired
        group.shape = GroupShape(replicas * tp, tp)
        self._changed(now)
        for replica in retired:
            if replica.in_flight == 0:
                self._retired_gone(now, group, replica)
            else:
                at = now + self.limits.drain_timeout_s
                self.events.schedule(at, self._retired_bound, (group, replica))

    def _retired_bound(self, now: float, item: tuple[SimGroup, Replica]) -> None:
        group, replica = item
        if replica not in group.retired:
            return
        for request in replica.abort_all(now, "aborted at the drain bound"):
            self._end(now, request, rejected=True)
        self._retired_gone(now, group, replica)

    def _retired_gone(self, now: float, group: SimGroup, replica: Replica) -> None:
        """A retired replica is drained: its pod terminates, then its GPUs are free."""
        self._account(now)
        group.retired.remove(replica)
        group.stopping.append(replica)
        self._changed(now)
        self._after(now, self.limits.termination_s, self._stopped, (group, replica))

    def _after(
        self, now: float, delay: float, action: Callable[[float, Any], None], item: Any
    ) -> None:
        """`action` `delay` seconds from now; at once (not as a later event) with no delay."""
        if delay > 0:
            self.events.schedule(now + delay, action, item)
        else:
            action(now, item)

    def _stopped(self, now: float, item: tuple[SimGroup, Replica]) -> None:
        group, replica = item
        self._account(now)
        group.stopping.remove(replica)
        self._changed(now)
        if self.on_replica_removed is not None:
            self.on_replica_removed(group, group.shape.tensor_parallel)

    def start(self, now: float, name: str, node: str | None) -> None:
        """The group's pods are bound to `node`: its engines load and turn Ready."""
        self._account(now)
        group = self.groups[name]
        group.state, group.node = "starting", node
        self._changed(now, group)
        degree = self.profile.degree(group.shape.tensor_parallel)
        assert degree is not None
        self.events.schedule(now + degree.startup_seconds, self._ready, group)

    def _ready(self, now: float, group: SimGroup) -> None:
        if group.state != "starting":
            return  # deleted before it started
        self._account(now)
        group.state = "ready"
        self._changed(now, group)
        while self.held and self.serving:
            self._route(now, self.held.popleft())

    def delete(self, now: float, name: str) -> None:
        """Drain a group: no new work now; gone once idle or at the drain bound."""
        self._account(now)
        group = self.groups[name]
        if group.state in ("draining", "terminating"):
            return
        was_starting = group.state in ("pending", "starting")
        group.state = "draining"
        self._changed(now, group)
        if was_starting or group.in_flight == 0:
            self._remove(now, group)
        else:
            self.events.schedule(now + self.limits.drain_timeout_s, self._drain_bound, group)

    def _drain_bound(self, now: float, group: SimGroup) -> None:
        if self.groups.get(group.name) is not group or group.state != "draining":
            return
        for replica in group.replicas:
            for request in replica.abort_all(now, "aborted at the drain bound"):
                self._end(now, request, rejected=True)
        self._remove(now, group)

    def _remove(self, now: float, group: SimGroup) -> None:
        """A drained group is deleted: its pods terminate, then it is gone."""
        self._account(now)
        group.state = "terminating"
        self._changed(now, group)
        self._after(now, self.limits.termination_s, self._gone, group)

    def _gone(self, now: float, group: SimGroup) -> None:
        if self.groups.get(group.name) is not group:
            return
        self._account(now)
        del self.groups[group.name]
        self._changed(now, group)
        if self.on_removed is not None:
            self.on_removed(group)

    # requests --------------------------------------------------------------------------
    def arrive(self, now: float, request: Request) -> None:
        self._account(now)
        self.arrived += 1
        self.in_flight += 1
        if self.serving and not self.held:
            self._route(now, request)
        elif len(self.held) >= self.limits.hold_max:
            self._end(now, request, rejected=True, reason="gateway hold queue full")
        else:
            self.held.append(request)
            self.events.schedule(now + self.limits.hold_s, self._hold_bound, request)

    def _hold_bound(self, now: float, request: Request) -> None:
        if request.replica is None and request.reason is None:
            self.held.remove(request)
            reason = f"no replica ready within {self.limits.hold_s:.0f}s"
            self._end(now, request, rejected=True, reason=reason)

    def _route(self, now: float, request: Request) -> None:
        self._seq += 1
        snapshot = Snapshot(
            tuple(ReplicaState(r.key, r.tensor_parallel, r.in_flight) for r in self.serving)
        )
        chosen = self.choose(snapshot, RouteRequest(self._seq, self._rng.getrandbits(64)))
        assert chosen is not None
        replica = next(r for r in self.serving if r.key == chosen.key)
        replica.submit(now, request)

    def _done(self, now: float, request: Request) -> None:
        self._end(now, request, rejected=False)
        group = self.groups.get(request.replica.key.split("/")[0]) if request.replica else None
        if group is not None and group.state == "draining" and group.in_flight == 0:
            self._remove(now, group)
        elif (
            group is not None and request.replica in group.retired and not request.replica.in_flight
        ):
            self._retired_gone(now, group, request.replica)

    def _end(self, now: float, request: Request, *, rejected: bool, reason: str = "") -> None:
        self._account(now)
        self.in_flight -= 1
        if rejected:
            request.reason = request.reason or reason
            self.rejected.append(request)
        else:
            self.finished.append(request)
        if self.on_end is not None:
            self.on_end(now, request)

    def running(self) -> int:
        """Requests neither finished nor rejected (in a replica or held by the gateway)."""
        return self.in_flight
