"""The one adapter between the simulator and the operator's decision code.

Each pass builds the Snapshot observe would build from the simulated cluster (the endpoint's
groups with their shapes, nodes, pod-spec hashes and readiness, groups still draining as
terminating with their GPUs held, free GPUs per node when decide asks for them, the gateways'
load sample in the operator's window, and the status the previous pass wrote) and runs the
operator's own `decide`; the caller applies the Decision's steps to the simulated cluster.
Thresholds mode is decide as it is. Objectives mode (not an operator mode yet) is decide with
a target chooser: `objectives.choose` on the request rate behind the window's mean in-flight
requests; every step towards that target is still decide's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from scaleserve.operator.builders import Owner
from scaleserve.operator.concurrency import Windows
from scaleserve.operator.decide import Create, Decision, decide
from scaleserve.operator.layout import (
    GroupShape,
    Layout,
    describe,
    group_shapes,
    initial_layout,
    seconds_since_reshape,
)
from scaleserve.operator.objectives import Objectives, choose, demand
from scaleserve.operator.rollout import pod_hash
from scaleserve.operator.snapshot import (
    ANNOTATION_POD_HASH,
    EngineGroup,
    NodeFree,
    PendingPod,
    Snapshot,
)
from scaleserve.operator.spec import EndpointSpec, parse_spec
from scaleserve.operator.target import (
    NO_SAMPLES,
    Chooser,
    Event,
    Target,
    choose_target,
    seconds_since,
    stamp,
)
from scaleserve.profiles import Profile

OWNER = Owner("sim", "default", "sim-uid")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_KEY = ("default", "sim", OWNER.uid)


class Control:
    """One endpoint's operator: its spec, the gateways' window and the last status written
    (all decide keeps between passes, so a restarted operator would lose nothing)."""

    def __init__(self, spec: EndpointSpec, choose: Chooser = choose_target) -> None:
        assert spec.autoscaling is not None
        self.spec, self.choose = spec, choose
        self.limit = spec.autoscaling.gpu_budget + spec.autoscaling.surge_gpus
        self.window_s = spec.autoscaling.window_seconds
        self.windows = Windows()
        self.status: dict[str, Any] = {}
        # what decide took in the last pass (both calls when it asked twice), in wall time and
        # in this thread's CPU time (which leaves out time other processes had the CPU)
        self.decide_ns = self.decide_cpu_ns = 0
        self._hashes: dict[GroupShape, str] = {}

    def initial(self) -> tuple[GroupShape, ...]:
        return group_shapes(initial_layout(self.spec), self.spec.gpu.per_node)

    def pod_hash(self, shape: GroupShape) -> str:
        """The hash the operator stamps on a group of `shape` (the warm groups get it too)."""
        if shape not in self._hashes:
            self._hashes[shape] = pod_hash(self.spec, OWNER, shape)
        return self._hashes[shape]

    def step(
        self,
        now: float,
        groups: Sequence[EngineGroup],
        in_flight_avg: float,
        free: Callable[[], NodeFree],
        pending: Sequence[PendingPod] = (),
    ) -> Decision:
        """One operator pass; `groups` includes draining ones (terminating, GPUs still held)."""
        self.windows.add(_KEY, now, in_flight_avg, self.window_s)
        snap = Snapshot(
            owner=OWNER,
            generation=1,
            status=self.status,
            groups=tuple(groups),
            gateways_ready=1,
            pending=tuple(pending),
            orphan_gpus=sum(g.group.size for g in groups if g.terminating),
            names_in_use=frozenset(g.group.name for g in groups),
            window=self.windows.get(_KEY, now, self.window_s),
        )
        at = EPOCH + timedelta(seconds=now)
        self.decide_ns = self.decide_cpu_ns = 0
        decision = self._decide(snap, at)
        if decision.needs_free_gpus:
            decision = self._decide(replace(snap, free=free()), at)
        self.status = dict(decision.status)
        return decision

    def _decide(self, snap: Snapshot, at: datetime) -> Decision:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        decision = decide(self.spec, snap, at, self.choose)
        self.decide_ns += time.perf_counter_ns() - wall
        self.decide_cpu_ns += time.thread_time_ns() - cpu
        return decision

    @property
    def reshape_unfinished(self) -> bool:
        """The last target chosen is not reached yet (by the status the last pass wrote)."""
        since = self.status.get("lastReshapeTime")
        done = self.status.get("lastReshapeCompletedTime")
        return since is not None and (done is None or done < since)


def reshape_started(decision: Decision) -> bool:
    return any(e.reason == "ReshapeStarted" for e in decision.events)


def created_hash(step: Create) -> str | None:
    """The pod-spec hash decide stamped on a new group's StatefulSet."""
    annotations = step.manifest["metadata"].get("annotations") or {}
    return annotations.get(ANNOTATION_POD_HASH)


class ThresholdsControl(Control):
    """The operator's thresholds mode: decide as it is."""


class ObjectivesChooser:
    """The target of objectives mode: `objectives.choose` on the request rate behind the
    window's mean in-flight requests (`objectives.demand`). The window must be full, a reshape
    in progress is finished first, and a move to fewer GPUs waits for the cooldown (counted from
    the last reshape's completion); a move to more GPUs does not wait."""

    def __init__(self, objectives: Objectives, profile: Profile) -> None:
        self.objectives, self.profile = objectives, profile
        self.first = choose(objectives, profile, 0.0, ()).shapes

    def __call__(
        self, spec: EndpointSpec, snap: Snapshot, hold: bool, now: datetime
    ) -> tuple[Target, tuple[Event, ...]]:
        policy, old, window = spec.autoscaling, snap.status, snap.window or NO_SAMPLES
        assert policy is not None
        previous = _parse(old.get("targetLayout"), spec.gpu.per_node) or self.first
        since = old.get("lastReshapeTime")
        seen = round(window.mean, 2) if window.mean is not None else None

        def keep(note: str) -> tuple[Target, tuple[Event, ...]]:
            return Target(None, since, seen, note, previous), ()

        live = snap.live
        at = sorted(g.group.shape for g in live) == sorted(previous)
        if hold:
            return keep("holding the layout while degraded")
        if window.mean is None or window.span_s < policy.window_seconds:
            return keep("collecting samples")
        if not (at and all(g.is_ready for g in live)):
            return keep("reshaping")
        rate = demand(self.objectives, self.profile, previous, window.mean)
        plan = choose(self.objectives, self.profile, rate, previous)
        elapsed = seconds_since_reshape(
            seconds_since(since, now), seconds_since(old.get("lastReshapeCompletedTime"), now)
        )
        fewer = plan.gpus < sum(s.size for s in previous)
        if fewer and elapsed is not None and elapsed < policy.cooldown_seconds:
            return keep(f"cooldown before {plan.reason}")
        if sorted(plan.shapes) == sorted(previous):
            return keep(plan.reason)
        message = f"{describe(previous)} -> {describe(plan.shapes)}: {plan.reason}"
        event = Event("Normal", "ReshapeStarted", message)
        return Target(None, stamp(now), seen, plan.reason, plan.shapes), (event,)


class ObjectivesControl(Control):
    """Objectives mode: decide with `ObjectivesChooser` picking the target, on a spec whose
    budget is the objectives' maxGPUs (its thresholds are not read)."""

    def __init__(
        self, objectives: Objectives, profile: Profile, window_s: int, cooldown_s: int, surge: int
    ) -> None:
        self.chooser = ObjectivesChooser(objectives, profile)
        super().__init__(_objectives_spec(objectives, window_s, cooldown_s, surge), self.chooser)

    def initial(self) -> tuple[GroupShape, ...]:
        return self.chooser.first


def _objectives_spec(
    objectives: Objectives, window_s: int, cooldown_s: int, surge: int
) -> EndpointSpec:
    return parse_spec(
        {
            "model": {"uri": "hf://simulated"},
            "gpu": {"perNode": objectives.per_node},
            "autoscaling": {
                "gpuBudget": objectives.max_gpus,
                "surgeGPUs": surge,
                "tensorParallelCandidates": [1],
                "concurrencyThresholds": [],
                "windowSeconds": window_s,
                "cooldownSeconds": cooldown_s,
            },
        }
    )


def _parse(text: str | None, per_node: int) -> tuple[GroupShape, ...]:
    """The groups of a target as the status shows it ("1x8+4x1"), split as objectives does."""
    shapes: list[GroupShape] = []
    for part in (text or "").split("+"):
        layout = Layout.parse(part)
        if layout is None:
            return ()
        shapes.extend(group_shapes(layout, per_node))
    return tuple(shapes)
