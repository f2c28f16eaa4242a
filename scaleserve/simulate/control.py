"""The one adapter between the simulator and the operator's decision code.

A pass gets a `View` (what observe would have built: the live groups and whether each is
Ready, GPUs held by groups still draining, the gateways' time-averaged in-flight requests) and
returns the steps that are safe now, as data. Thresholds mode runs the operator's own
`choose_layout` (bands, window, hysteresis, cooldown) and `plan_transition` (make-before-break
within budget + surge), then keeps the steps the operator's executor would run now: a delete
only once every new group is Ready, one new group at a time while a transition deletes, no
create that would take the endpoint over its limit while deleted groups still hold GPUs.
Objectives mode runs the operator's `objectives.choose` in place of `choose_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleserve.operator.concurrency import Windows
from scaleserve.operator.layout import (
    Current,
    Group,
    GroupShape,
    Layout,
    Window,
    choose_layout,
    group_shapes,
    initial_layout,
    seconds_since_reshape,
)
from scaleserve.operator.objectives import Objectives, choose, demand
from scaleserve.operator.planner import Plan, plan_transition
from scaleserve.operator.spec import EndpointSpec
from scaleserve.profiles import Profile

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


class Control:
    """One endpoint's operator state, kept as the CR status keeps it: the target groups, when
    the target last changed and when a reshape last completed."""

    def __init__(self, per_node: int, limit: int, window_s: int, target: Layout) -> None:
        self.per_node = per_node
        self.limit = limit
        self.window_s = window_s
        self.windows = Windows()
        self.target: tuple[GroupShape, ...] = group_shapes(target, per_node)
        self.since: float | None = None
        self.completed: float | None = None

    def initial(self) -> tuple[GroupShape, ...]:
        return self.target

    def _choose(
        self, window: Window, elapsed: float | None, reshaping: bool
    ) -> tuple[tuple[GroupShape, ...], str]:
        raise NotImplementedError

    def step(self, now: float, view: View) -> Steps:
        self.windows.add(_KEY, now, view.in_flight_avg, self.window_s)
        window = self.windows.get(_KEY, now, self.window_s)
        elapsed = seconds_since_reshape(_ago(now, self.since), _ago(now, self.completed))
        shapes, reason = self._choose(window, elapsed, not _at(view, self.target))
        started = sorted(shapes) != sorted(self.target)
        if started:
            self.target, self.since = shapes, now
        plan = plan_transition(
            [g.group for g in view.groups],
            self.target,
            view.free_gpus,
            gpu_limit=self.limit,
            avoid_names=view.draining_names,
            releasing_gpus=view.draining_gpus,
        )
        done = plan.done and _at(view, self.target) and self.since is not None
        if done and (self.completed is None or self.completed < (self.since or 0.0)):
            self.completed = now
        creates, deletes = safe_steps(plan, view, self.limit)
        return Steps(creates, deletes, started, reason)


class ThresholdsControl(Control):
    """The operator's thresholds mode: `choose_layout` on the window of in-flight requests."""

    def __init__(self, spec: EndpointSpec) -> None:
        assert spec.autoscaling is not None
        self.policy = spec.autoscaling
        limit = self.policy.gpu_budget + self.policy.surge_gpus
        super().__init__(spec.gpu.per_node, limit, self.policy.window_seconds, initial_layout(spec))
        self.layout = initial_layout(spec)

    def _choose(
        self, window: Window, elapsed: float | None, reshaping: bool
    ) -> tuple[tuple[GroupShape, ...], str]:
        decision = choose_layout(self.policy, window, Current(self.layout, elapsed, reshaping))
        self.layout = decision.layout
        return group_shapes(decision.layout, self.per_node), decision.reason


class ObjectivesControl(Control):
    """The operator's objectives mode: `objectives.choose` on the request rate behind the
    window's mean in-flight requests (`objectives.demand`). The window must be full, a reshape
    in progress is finished first, and a move to fewer GPUs waits for the cooldown (counted
    from the last reshape's completion), so a dip shorter than the cooldown releases nothing;
    a move to more GPUs does not wait."""

    def __init__(
        self, objectives: Objectives, profile: Profile, window_s: int, cooldown_s: int, surge: int
    ) -> None:
        self.objectives, self.profile, self.cooldown_s = objectives, profile, cooldown_s
        first = choose(objectives, profile, 0.0, ())
        super().__init__(objectives.per_node, objectives.max_gpus + surge, window_s, Layout(1, 1))
        self.target = first.shapes

    def _choose(
        self, window: Window, elapsed: float | None, reshaping: bool
    ) -> tuple[tuple[GroupShape, ...], str]:
        if window.mean is None or window.span_s < self.window_s or reshaping:
            return self.target, "collecting samples or reshaping"
        rate = demand(self.objectives, self.profile, self.target, window.mean)
        plan = choose(self.objectives, self.profile, rate, self.target)
        fewer = plan.gpus < sum(s.size for s in self.target)
        if fewer and elapsed is not None and elapsed < self.cooldown_s:
            return self.target, f"cooldown before {plan.reason}"
        return plan.shapes, plan.reason


def _ago(now: float, stamp: float | None) -> float | None:
    return None if stamp is None else now - stamp


def _at(view: View, shapes: tuple[GroupShape, ...]) -> bool:
    """Whether the live groups are exactly `shapes`, all Ready (the reshape is complete)."""
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
