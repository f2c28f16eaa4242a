"""The one adapter between the simulator and the operator's decision code.

A pass gets a `View` (what observe would have built: the live groups and whether each is
Ready, GPUs held by groups still draining, the gateways' time-averaged in-flight requests) and
returns the steps that are safe now, as data. Thresholds mode runs the operator's own
`choose_layout` (bands, window, hysteresis, cooldown) and `plan_transition` (make-before-break
within budget + surge), then keeps the steps the operator's executor would run now: a delete
only once every new group is Ready, one new group at a time while a transition deletes, no
create that would take the endpoint over its limit while deleted groups still hold GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleserve.operator.concurrency import Windows
from scaleserve.operator.layout import (
    Current,
    Group,
    GroupShape,
    Layout,
    choose_layout,
    group_shapes,
    initial_layout,
    seconds_since_reshape,
)
from scaleserve.operator.planner import Plan, plan_transition
from scaleserve.operator.spec import EndpointSpec

_KEY = ("sim", "endpoint", "")


@dataclass(frozen=True)
class LiveGroup:
    group: Group
    ready: bool


@dataclass(frozen=True)
class View:
    groups: tuple[LiveGroup, ...]  # not draining
    draining_gpus: int
    draining_names: tuple[str, ...]
    in_flight_avg: float
    free_gpus: int  # in the cluster, beyond what the endpoint holds


@dataclass(frozen=True)
class Steps:
    creates: tuple[Group, ...]
    deletes: tuple[str, ...]
    reshape_started: bool  # the target changed in this pass
    reason: str


class ThresholdsControl:
    """The operator's thresholds mode, one endpoint, state kept as the CR status keeps it."""

    def __init__(self, spec: EndpointSpec) -> None:
        assert spec.autoscaling is not None
        self.spec = spec
        self.policy = spec.autoscaling
        self.limit = self.policy.gpu_budget + self.policy.surge_gpus
        self.windows = Windows()
        self.target: Layout = initial_layout(spec)
        self.since: float | None = None
        self.completed: float | None = None

    def initial(self) -> tuple[GroupShape, ...]:
        return group_shapes(self.target, self.spec.gpu.per_node)

    def step(self, now: float, view: View) -> Steps:
        self.windows.add(_KEY, now, view.in_flight_avg, self.policy.window_seconds)
        window = self.windows.get(_KEY, now, self.policy.window_seconds)
        shapes = group_shapes(self.target, self.spec.gpu.per_node)
        reshaping = not _at(view, shapes)
        elapsed = seconds_since_reshape(_ago(now, self.since), _ago(now, self.completed))
        decision = choose_layout(self.policy, window, Current(self.target, elapsed, reshaping))
        started = decision.changed and decision.layout != self.target
        if started:
            self.target, self.since = decision.layout, now
            shapes = group_shapes(self.target, self.spec.gpu.per_node)
        current = [g.group for g in view.groups]
        plan = plan_transition(
            current,
            shapes,
            view.free_gpus,
            gpu_limit=self.limit,
            avoid_names=view.draining_names,
            releasing_gpus=view.draining_gpus,
        )
        done = plan.done and _at(view, shapes) and self.since is not None
        if done and (self.completed is None or self.completed < (self.since or 0.0)):
            self.completed = now
        creates, deletes = safe_steps(plan, view, self.limit)
        return Steps(creates, deletes, started, decision.reason)


def _ago(now: float, stamp: float | None) -> float | None:
    return None if stamp is None else now - stamp


def _at(view: View, shapes: tuple[GroupShape, ...]) -> bool:
    live = sorted(g.group.shape for g in view.groups)
    return live == sorted(shapes) and all(g.ready for g in view.groups)


def safe_steps(plan: Plan, view: View, limit: int) -> tuple[tuple[Group, ...], tuple[str, ...]]:
    """The plan's steps the operator's executor runs now (scaleserve/operator/executor.py);
    none for a plan that would take the last serving group away (the operator holds then)."""
    if plan.disruptive:
        return (), ()
    not_ready = {g.group.name for g in view.groups if not g.ready}
    held = sum(g.group.size for g in view.groups) + view.draining_gpus
    deletes = any(s.action == "delete" for s in plan.steps)
    creates: list[Group] = []
    removed: list[str] = []
    for step in plan.steps:
        name = step.group.name
        if step.action == "delete":
            if not_ready - {name}:
                break
            removed.append(name)
            not_ready.discard(name)
            continue
        if (not_ready and deletes) or (deletes and held + step.group.size > limit):
            break
        creates.append(step.group)
        not_ready.add(name)
        held += step.group.size
        if deletes:
            break
    return tuple(creates), tuple(removed)
