"""decide against a simulated cluster: random spec edits, load changes, pod crashes, readiness
flaps, node loss, operator restarts, requests in flight and gateways that lag or do not answer,
with the invariants of make-before-break and of the drain checked after every pass. Only I/O
is simulated: the snapshot is built the way observe builds it, the decision applied the way act
applies it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scaleserve.operator.builders import Owner
from scaleserve.operator.decide import (
    Create,
    Decision,
    Delete,
    Resize,
    Retire,
    Serve,
    Shrink,
    decide,
)
from scaleserve.operator.layout import Group, Window
from scaleserve.operator.placement import NodeGPUs
from scaleserve.operator.scaling import parse_groups
from scaleserve.operator.snapshot import (
    ANNOTATION_POD_HASH,
    EngineGroup,
    EnginePod,
    NodeFree,
    ReplicaLoad,
    Snapshot,
)
from scaleserve.operator.spec import EndpointSpec, parse_spec
from scaleserve.operator.target import seconds_since
from scaleserve.profiles import parse_profile
from tests.fixtures.profiles import profile_document

pytestmark = pytest.mark.unit

PER_NODE = 8
WINDOW_S = 30
PASS_S = 10
SETTLE_PASSES = 40
EXAMPLES = 60
STEPS = 40
DRAIN_S = 40  # a few passes: the bound is reached with requests still in flight
# objectives mode: TP1 carries more per GPU, TP8 is faster per request
PROFILE = profile_document(
    {8: [(1, 10, 2.0), (101, 30, 52.0)], 1: [(1, 20, 9.0), (101, 60, 39.0)]}, output_tokens=100
)


@dataclass
class SimGroup:
    group: Group
    node: str | None
    pod_hash: str
    ready: bool = False
    terminating: bool = False
    ever_ready: bool = False
    transitional: bool = False  # created while an older group was still to be replaced
    retiring_since: str | None = None
    labelled: bool = True  # carries the label the engine Service selects
    routed: bool = True  # the gateways still send it new requests
    in_flight: int = 0
    starting: int = 0  # replicas a grow in place added, not ready yet
    shrink_to: int | None = None  # a shrink in place: ordinals from here up are retired
    shrink_since: str | None = None
    retired_labelled: bool = True
    retired_routed: bool = True
    retired_in_flight: int = 0

    @property
    def serving(self) -> bool:
        return self.ready and not self.terminating and self.retiring_since is None

    @property
    def resizing(self) -> bool:
        return bool(self.starting) or self.shrink_to is not None


class Endpoint(RuleBasedStateMachine):
    """One autoscaled endpoint on 8-GPU nodes."""

    @initialize(
        budget=st.sampled_from([8, 16]),
        surge=st.sampled_from([0, 8]),
        spare_nodes=st.integers(0, 1),
        disruption=st.booleans(),
        objectives=st.booleans(),
        candidates=st.sampled_from([(8, 1), (1,)]),
    )
    def start(
        self,
        budget: int,
        surge: int,
        spare_nodes: int,
        disruption: bool,
        objectives: bool,
        candidates: tuple[int, ...],
    ) -> None:
        self.budget, self.surge, self.disruption = budget, surge, disruption
        self.objectives = objectives
        # objectives mode at TP1 alone: the load changes the replica count (resizes in place)
        self.candidates = list(candidates) if objectives else [8, 1]
        self.max_model_len = 4096
        self.nodes = {f"n{i}": True for i in range((budget + surge) // PER_NODE + spare_nodes)}
        self.groups: dict[str, SimGroup] = {}
        self.status: dict[str, Any] = {}
        self.load = 1.0
        self.trend = 0.0  # in flight per second
        self.full_at = WINDOW_S  # the window is full from here (refills after a restart)
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.t = 0.0
        self.was_ready = False
        self.passes = 0
        self.examples_steps = 0
        self.stats_ok = True

    # --- inputs ---------------------------------------------------------------------------

    def spec(self) -> EndpointSpec:
        # thresholds mode within gpuBudget, or objectives mode within 1..budget GPUs
        policy: dict[str, Any] = (
            {
                "mode": "objectives",
                # TP1 alone: an objective one replica meets up to ~50 in flight
                "objectives": {"tbtP50Ms": 25 if len(self.candidates) > 1 else 40},
                "maxGPUs": self.budget,
                "profile": {"inline": PROFILE},
            }
            if self.objectives
            else {"gpuBudget": self.budget, "concurrencyThresholds": [64]}
        )
        return parse_spec(
            {
                "model": {"uri": "hf://org/m"},
                "engine": {"maxModelLen": self.max_model_len},
                "gpu": {"perNode": PER_NODE},
                "autoscaling": {
                    **policy,
                    "surgeGPUs": self.surge,
                    "tensorParallelCandidates": self.candidates,
                    "windowSeconds": WINDOW_S,
                    "cooldownSeconds": 30,
                },
                "rollout": {"allowDisruption": self.disruption, "drainSeconds": DRAIN_S},
            }
        )

    @rule(length=st.sampled_from([2048, 4096, 8192]))
    def edit_spec(self, length: int) -> None:
        self.max_model_len = length

    @rule(
        load=st.sampled_from([1.0, 30.0, 60.0, 100.0, 150.0, 300.0]),
        trend=st.sampled_from([-1.0, 0.0, 0.2, 2.0]),
    )
    def change_load(self, load: float, trend: float) -> None:
        """A new load, rising or falling (objectives mode sizes a rising one ahead)."""
        self.load, self.trend = load, trend

    @rule(load=st.sampled_from([1.0, 30.0, 150.0, 300.0]), data=st.data())
    def load_holds(self, load: float, data: st.DataObject) -> None:
        """A load held over several passes, pods and gateways keeping up: the policy's
        window fills and the transition it starts runs (resizes in place among them)."""
        self.load, self.trend = load, 0.0
        for _ in range(6):
            self.requests(data)
            self.pods_progress(data)
            self.gateways_follow_the_endpoint_slices()
            self.operator_pass()

    @rule(data=st.data())
    def requests(self, data: st.DataObject) -> None:
        """Requests start on groups the gateways route to and finish anywhere."""
        for g in self.groups.values():
            if g.terminating:
                continue
            most = 5 if g.routed and g.ready else g.in_flight
            g.in_flight = data.draw(st.integers(0, most))
            most = 5 if g.retired_routed else g.retired_in_flight
            g.retired_in_flight = data.draw(st.integers(0, most)) if g.shrink_to else 0

    @rule()
    def gateways_follow_the_endpoint_slices(self) -> None:
        for g in self.groups.values():
            g.routed = g.labelled
            g.retired_routed = g.retired_labelled

    @rule()
    def gateways_flip_answering(self) -> None:
        self.stats_ok = not self.stats_ok

    @rule(data=st.data())
    def crash_or_flap(self, data: st.DataObject) -> None:
        live = [g for g in self.groups.values() if g.serving]
        if live:
            data.draw(st.sampled_from(live)).ready = False

    @rule(data=st.data())
    def lose_node(self, data: st.DataObject) -> None:
        up = [n for n, ok in self.nodes.items() if ok]
        if len(up) > 1:
            node = data.draw(st.sampled_from(up))
            self.nodes[node] = False
            for g in self.groups.values():
                if g.node == node:
                    g.ready = False

    @rule()
    def restore_nodes(self) -> None:
        self.nodes = dict.fromkeys(self.nodes, True)

    @rule()
    def restart_operator(self) -> None:
        # in-memory state is the concurrency window: it refills; the status survives
        self.full_at = self.t + WINDOW_S

    @rule(data=st.data())
    def pods_progress(self, data: st.DataObject) -> None:
        """The kubelet and the API server: pods start, terminating groups go away."""
        for g in list(self.groups.values()):
            if g.terminating:
                if data.draw(st.booleans()):
                    del self.groups[g.group.name]
            elif not g.ready and self._placed(g) and data.draw(st.booleans()):
                g.ready = g.ever_ready = True
                g.starting = 0
            elif g.starting and self._placed(g) and data.draw(st.booleans()):
                g.starting = 0

    # --- the operator -----------------------------------------------------------------------

    def _placed(self, g: SimGroup) -> bool:
        if g.node is None:  # unpinned: the scheduler places it where it fits
            room = {n: f for n, f in self._free(live_only=False).items() if f >= g.group.size}
            if not room:
                return False
            g.node = min(room)
        return self.nodes.get(g.node, False)

    def _free(self, *, live_only: bool) -> dict[str, int]:
        used = dict.fromkeys(self.nodes, 0)
        for g in self.groups.values():
            if g.node is not None and not (live_only and g.terminating):
                used[g.node] += g.group.size
        return {n: PER_NODE - used[n] for n, ok in self.nodes.items() if ok}

    def snapshot(self) -> Snapshot:
        window = (
            Window(self.load, float(WINDOW_S), 3, self.trend)
            if self.t >= self.full_at
            else Window(None, 0, 0)
        )
        nodes = [NodeGPUs(n, f) for n, f in self._free(live_only=False).items() if f > 0]
        after = [NodeGPUs(n, f) for n, f in self._free(live_only=True).items() if f > 0]
        groups = tuple(
            EngineGroup(
                g.group,
                g.node,
                g.group.replicas,
                g.group.replicas - g.starting if g.ready else 0,
                g.terminating,
                g.pod_hash,
                g.retiring_since,
                g.shrink_to,
                g.shrink_since,
            )
            for g in self.groups.values()
        )
        pods, load = self._pods()
        return Snapshot(
            owner=Owner("chat", "ns", "uid"),
            generation=1,
            status=dict(self.status),
            groups=groups,
            gateways_ready=1,
            free=NodeFree(nodes, after),
            orphan_gpus=sum(g.group.size for g in self.groups.values() if g.terminating),
            names_in_use=frozenset(n for n, g in self.groups.items() if g.terminating),
            window=window,
            pods=pods,
            load=load if self.stats_ok else None,
            profile=parse_profile(PROFILE) if self.objectives else None,
        )

    def _pods(self) -> tuple[tuple[EnginePod, ...], dict[str, ReplicaLoad]]:
        """Each live group's pods, and the gateways' report: a group's requests on its first
        pod, a shrink's retired requests on its first retired pod."""
        pods: list[EnginePod] = []
        load: dict[str, ReplicaLoad] = {}
        live = [(i, g) for i, g in enumerate(self.groups.values()) if not g.terminating]
        for i, g in live:
            for k in range(g.group.replicas):
                ip = f"10.{i}.0.{k}"
                retired = g.shrink_to is not None and k >= g.shrink_to
                labelled = g.retired_labelled if retired else g.labelled
                pods.append(EnginePod(f"chat-{g.group.name}-{k}", g.group.name, ip, labelled))
                if retired:
                    first = k == g.shrink_to
                    load[ip] = ReplicaLoad(g.retired_in_flight if first else 0, g.retired_routed)
                else:
                    load[ip] = ReplicaLoad(g.in_flight if k == 0 else 0, g.routed)
        return tuple(pods), load

    def reconcile(self) -> Decision:
        self.t += PASS_S
        self.now += timedelta(seconds=PASS_S)
        spec = self.spec()
        decision = decide(spec, self.snapshot(), self.now)
        self._check_steps(decision)
        self._apply(decision)
        self.status = {**self.status, **decision.status}
        self.passes += 1
        return decision

    def _check_steps(self, decision: Decision) -> None:
        for step in decision.steps:
            if isinstance(step, Delete):
                # no group with requests in flight is deleted before the bound
                g = self.groups[step.group.name]
                assert g.retiring_since is not None
                assert not g.terminating
                drained = g.in_flight == 0 and not g.routed and self.stats_ok
                assert drained or (seconds_since(g.retiring_since, self.now) or 0) >= DRAIN_S
        live = {
            n: g for n, g in self.groups.items() if not g.terminating and g.retiring_since is None
        }
        deleted = {s.group.name for s in decision.steps if isinstance(s, Retire)}
        creates = [s for s in decision.steps if isinstance(s, Create)]
        for name in deleted:
            assert name in live
            # readiness before removal: every other group is ready
            assert all(g.ready for n, g in live.items() if n not in deleted)
            if not self.disruption:  # never disruptive unless opted in
                assert any(g.ready for n, g in live.items() if n not in deleted) or not any(
                    g.ready for g in live.values()
                )
        if deleted:
            assert len(creates) <= 1  # one group in transition
        self._check_resizes(decision, live)

    def _check_resizes(self, decision: Decision, live: dict[str, SimGroup]) -> None:
        for step in decision.steps:
            if not isinstance(step, Shrink | Resize):
                continue
            g = self.groups[step.group.name]
            assert g.group.tensor_parallel == step.group.tensor_parallel
            assert g.pod_hash == self._hash(decision, g)  # a stale group is replaced
            if isinstance(step, Shrink) and g.shrink_to is None:
                # a shrink starts only with every group ready and none resizing
                assert all(x.ready and not x.resizing for x in live.values())
                assert 0 < step.replicas < g.group.replicas
            elif isinstance(step, Resize) and g.shrink_to is not None:
                # retired replicas with requests in flight are not removed before the bound
                assert step.group.replicas == g.shrink_to
                drained = g.retired_in_flight == 0 and not g.retired_routed and self.stats_ok
                assert drained or (seconds_since(g.shrink_since, self.now) or 0) >= DRAIN_S
            elif isinstance(step, Resize):
                assert step.group.size > g.group.size  # grows only; shrinks drain first
                assert all(x.ready and not x.resizing for x in live.values())

    def _apply(self, decision: Decision) -> None:
        stale_exists = any(
            not g.terminating and g.retiring_since is None and g.pod_hash != self._hash(decision, g)
            for g in self.groups.values()
        )
        for step in decision.steps:
            if isinstance(step, Delete):
                self.groups[step.group.name].terminating = True
                self.groups[step.group.name].ready = False
            elif isinstance(step, Retire):
                self.groups[step.group.name].retiring_since = step.since
                self.groups[step.group.name].labelled = False
            elif isinstance(step, Serve):
                self.groups[step.group.name].labelled = True
            elif isinstance(step, Shrink):
                event("shrink in place")
                g = self.groups[step.group.name]
                g.shrink_to, g.shrink_since = step.replicas, g.shrink_since or step.since
                g.retired_labelled = False
                g.retired_in_flight, g.in_flight = g.in_flight, 0
            elif isinstance(step, Resize):
                event("resize in place")
                self._resize(self.groups[step.group.name], step)
            else:
                annotations = step.manifest["metadata"]["annotations"]
                self.groups[step.group.name] = SimGroup(
                    step.group,
                    step.node,
                    annotations[ANNOTATION_POD_HASH],
                    transitional=stale_exists or any(isinstance(s, Retire) for s in decision.steps),
                )

    def _resize(self, g: SimGroup, step: Resize) -> None:
        if g.shrink_to is not None:  # the StatefulSet removes the retired ordinals
            g.shrink_to = g.shrink_since = None
            g.retired_labelled = g.retired_routed = True
            g.retired_in_flight = 0
        else:
            g.starting = step.group.replicas - g.group.replicas
        g.group = step.group

    def _hash(self, decision: Decision, g: SimGroup) -> str:
        for step in decision.steps:
            if isinstance(step, Create) and step.group.shape == g.group.shape:
                return str(step.manifest["metadata"]["annotations"][ANNOTATION_POD_HASH])
        return g.pod_hash

    @rule()
    def operator_pass(self) -> None:
        ready_before = any(g.serving for g in self.groups.values())
        self.reconcile()
        ready_after = any(g.serving for g in self.groups.values())
        if ready_before and not self.disruption:
            assert ready_after, "the operator took the last ready group away"

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def within_budget_and_surge(self) -> None:
        if hasattr(self, "groups"):
            held = sum(g.group.size for g in self.groups.values())
            assert held <= self.budget + self.surge

    @invariant()
    def one_group_in_transition(self) -> None:
        if hasattr(self, "groups"):
            moving = [
                g
                for g in self.groups.values()
                if g.transitional and not g.ever_ready and not g.terminating
            ]
            assert len(moving) <= 1
            resizing = [g for g in self.groups.values() if g.resizing and not g.terminating]
            assert len(resizing) <= 1
            assert not (resizing and moving)

    @precondition(lambda self: hasattr(self, "groups"))
    @rule()
    def converges_once_inputs_stop(self) -> None:
        self.restore_nodes()
        self.full_at = min(self.full_at, self.t)
        self.stats_ok = True
        decision = self.reconcile()
        for _ in range(SETTLE_PASSES):
            self.gateways_follow_the_endpoint_slices()
            for g in list(self.groups.values()):
                g.in_flight = 0 if g.retiring_since else g.in_flight
                g.retired_in_flight = 0
                if g.terminating:
                    del self.groups[g.group.name]
                elif self._placed(g):
                    g.ready = g.ever_ready = True
                    g.starting = 0
            decision = self.reconcile()
        live = [g for g in self.groups.values() if not g.terminating]
        assert all(g.retiring_since is None for g in live), "a drained group was kept"
        assert not any(g.resizing for g in live), "a resize was left halfway"
        if self.status.get("conditions") and _true(self.status, "Held"):
            # a single group without spare GPUs holds its pods and says why
            assert not self.disruption
            assert len(live) == 1  # two or more groups roll one at a time and keep serving
            assert self.status["message"].startswith("holding")
            assert all(g.ready for g in live)
            return
        shapes = sorted(parse_groups(decision.status["targetLayout"], PER_NODE) or ())
        assert sorted(g.group.shape for g in live) == shapes, self.status.get("message")
        assert all(g.ready for g in live)
        assert not _true(self.status, "Reshaping")
        assert self.status["phase"] == "Ready"
        assert len({g.pod_hash for g in live}) == 1


def _true(status: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in status.get("conditions") or [])


Endpoint.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDecideAgainstASimulatedCluster = Endpoint.TestCase
