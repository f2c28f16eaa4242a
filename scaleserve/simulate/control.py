"""The one adapter between the simulator and the operator's decision code.

Each pass builds the Snapshot observe would build from the simulated cluster (the endpoint's
groups with their shapes, nodes, pod-spec hashes and readiness, groups still draining as
terminating with their GPUs held, free GPUs per node when decide asks for them, the gateways'
load sample in the operator's window, with its trend over objectives mode's lookahead, and the
status the previous pass wrote) and runs the operator's own `decide`; the caller applies the
Decision's steps to the simulated cluster. Only this file knows the status decide writes (a
run that starts warm says so with `Control.completed`).
Both autoscaling modes are decide as it is, on a spec in that mode (objectives mode's profile
inline, and on the snapshot as observe puts it).
"""

from __future__ import annotations

import math
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
    describe,
    group_shapes,
    initial_layout,
)
from scaleserve.operator.objectives import Objectives
from scaleserve.operator.rollout import pod_hash
from scaleserve.operator.scaling import first_layout, objectives_of, trend_seconds
from scaleserve.operator.snapshot import (
    ANNOTATION_POD_HASH,
    EngineGroup,
    NodeFree,
    PendingPod,
    Snapshot,
)
from scaleserve.operator.spec import EndpointSpec, parse_spec
from scaleserve.operator.target import stamp
from scaleserve.profiles import Profile

OWNER = Owner("sim", "default", "sim-uid")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_KEY = ("default", "sim", OWNER.uid)


class Control:
    """One endpoint's operator: its spec, the gateways' window and the last status written
    (all decide keeps between passes, so a restarted operator would lose nothing)."""

    profile: Profile | None = None  # objectives mode's, handed to decide as observe does

    def __init__(self, spec: EndpointSpec) -> None:
        assert spec.autoscaling is not None
        self.spec = spec
        self.limit = spec.autoscaling.budget + spec.autoscaling.surge_gpus
        self.window_s = spec.autoscaling.window_seconds
        self.windows = Windows()
        self.status: dict[str, Any] = {}
        # what decide took in the last pass (both calls when it asked twice), in wall time and
        # in this thread's CPU time (which leaves out time other processes had the CPU)
        self.decide_ns = self.decide_cpu_ns = 0
        self._hashes: dict[GroupShape, str] = {}

    def initial(self) -> tuple[GroupShape, ...]:
        return group_shapes(initial_layout(self.spec), self.spec.gpu.per_node)

    def completed(self, now: float) -> None:
        """The first layout was completed at `now` (as on a cluster whose endpoint just turned
        Ready): it is the target, and the cooldown runs from its completion."""
        at = stamp(EPOCH + timedelta(seconds=now))
        self.status = {
            "targetLayout": describe(self.initial()),
            "lastReshapeTime": at,
            "lastReshapeCompletedTime": at,
        }

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
        """One operator pass; `groups` includes draining ones (terminating, GPUs still held).
        With no group serving, the requests in flight are taken as held by the gateways."""
        trend_s = trend_seconds(self.spec, self.profile)
        self.windows.add(_KEY, now, in_flight_avg, max(self.window_s, trend_s))
        serving = any(not g.terminating and g.retiring_since is None for g in groups)
        snap = Snapshot(
            owner=OWNER,
            generation=1,
            status=self.status,
            groups=tuple(groups),
            gateways_ready=1,
            pending=tuple(pending),
            orphan_gpus=sum(g.group.size for g in groups if g.terminating),
            names_in_use=frozenset(g.group.name for g in groups),
            window=self.windows.get(_KEY, now, self.window_s, trend_s),
            profile=self.profile,
            held=0 if serving else math.ceil(in_flight_avg),
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
        decision = decide(self.spec, snap, at)
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


class ObjectivesControl(Control):
    """The operator's objectives mode: decide on a spec in that mode, its profile inline (the
    snapshot carries it, as observe puts it there)."""

    def __init__(
        self, objectives: Objectives, profile: Profile, window_s: int, cooldown_s: int, surge: int
    ) -> None:
        super().__init__(_objectives_spec(objectives, profile, window_s, cooldown_s, surge))
        self.profile = self.objectives_profile = profile

    def initial(self) -> tuple[GroupShape, ...]:
        return first_layout(objectives_of(self.spec), self.objectives_profile)


def _objectives_spec(
    objectives: Objectives, profile: Profile, window_s: int, cooldown_s: int, surge: int
) -> EndpointSpec:
    goals = {
        "ttftP50Ms": objectives.ttft_ms,
        "tbtP50Ms": objectives.tbt_ms,
        "ttftP99Ms": objectives.ttft_p99_ms,
        "tbtP99Ms": objectives.tbt_p99_ms,
    }
    return parse_spec(
        {
            "model": {"uri": "hf://simulated"},
            "gpu": {"perNode": objectives.per_node},
            "autoscaling": {
                "mode": "objectives",
                "objectives": {k: v for k, v in goals.items() if v is not None},
                "minGPUs": objectives.min_gpus,
                "maxGPUs": objectives.max_gpus,
                "profile": {"inline": profile.to_dict()},
                "surgeGPUs": surge,
                "tensorParallelCandidates": list(objectives.candidates),
                "hysteresis": objectives.hysteresis,
                "windowSeconds": window_s,
                "cooldownSeconds": cooldown_s,
                **(
                    {}
                    if objectives.lookahead_s is None
                    else {"scaleUpLookaheadSeconds": int(objectives.lookahead_s)}
                ),
            },
        }
    )
