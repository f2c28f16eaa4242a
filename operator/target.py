"""The layout an endpoint should run now: its static layout, or the autoscaling policy's choice
from the concurrency window, the last status and the groups that exist (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scaleserve.operator.layout import (
    Current,
    GroupShape,
    Layout,
    Window,
    choose_layout,
    describe,
    group_shapes,
    seconds_since_reshape,
)
from scaleserve.operator.layout import (
    Decision as LayoutDecision,
)
from scaleserve.operator.snapshot import EngineGroup, Snapshot
from scaleserve.operator.spec import Autoscaling, EndpointSpec

NO_SAMPLES = Window(None, 0.0, 0)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Target:
    """layout: a homogeneous target, split into node-sized groups; or None with `shapes`, the
    groups themselves (a policy that mixes TP degrees)."""

    layout: Layout | None
    since: str | None  # when the target was chosen (status.lastReshapeTime)
    concurrency: float | None
    note: str = ""
    shapes: tuple[GroupShape, ...] = ()
    status: Mapping[str, Any] = field(default_factory=dict)  # the policy's own status fields
    problem: str = ""  # what keeps the policy from choosing (the endpoint is Degraded)

    def groups(self, per_node: int) -> tuple[GroupShape, ...]:
        if self.layout is None:
            return self.shapes
        return group_shapes(self.layout, per_node)

    def __str__(self) -> str:
        return str(self.layout) if self.layout is not None else describe(self.shapes)


def stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(text: str | None, now: datetime) -> float | None:
    if not text:
        return None
    return (now - datetime.fromisoformat(text.replace("Z", "+00:00"))).total_seconds()


def _inferred(groups: Sequence[EngineGroup]) -> Layout | None:
    degrees = {g.group.tensor_parallel for g in groups}
    if len(degrees) != 1:
        return None
    return Layout(sum(g.group.replicas for g in groups), degrees.pop())


def at_layout(live: Sequence[EngineGroup], layout: Layout, per_node: int) -> bool:
    """Whether the groups are exactly `layout`'s and all ready (its reshape is complete)."""
    shapes = sorted(g.group.shape for g in live)
    return shapes == sorted(group_shapes(layout, per_node)) and all(g.is_ready for g in live)


def was_held(status: Mapping[str, Any]) -> bool:
    """Whether the last pass held the rollout (no spare GPUs for make-before-break)."""
    return any(
        c.get("type") == "Held" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _back_to(policy: Autoscaling, window: Window, layout: Layout | None) -> LayoutDecision | None:
    """The policy's decision for the groups there are, when it keeps them (None otherwise)."""
    if layout is None or not window_full(policy.window_seconds, window):
        return None
    back = choose_layout(policy, window, Current(layout, None))
    return back if back.layout == layout else None


def window_full(window_seconds: int, window: Window) -> bool:
    return window.mean is not None and window.samples > 0 and window.span_s >= window_seconds


# what picks the target: choose_target, or a caller's policy with the same inputs
Chooser = Callable[[EndpointSpec, Snapshot, bool, datetime], tuple[Target, tuple[Event, ...]]]


def choose_target(
    spec: EndpointSpec, snap: Snapshot, hold: bool, now: datetime
) -> tuple[Target, tuple[Event, ...]]:
    """The target layout and the ReshapeStarted event when it changes.

    hold: keep the previous target (engine pods stuck Pending: no reshape on top of that).
    """
    if spec.layout is not None:
        return Target(Layout(spec.layout.replicas, spec.layout.tensor_parallel), None, None), ()
    policy = spec.autoscaling
    assert policy is not None
    mode = {"mode": "thresholds"}
    old, live, window = snap.status, snap.serving, snap.window
    mean = window.mean if window is not None else None
    seen = round(mean, 2) if mean is not None else old.get("observedConcurrency")
    previous = Layout.parse(old.get("targetLayout") or "") or _inferred(live)
    since = old.get("lastReshapeTime")
    if hold and previous is not None:
        return Target(previous, since, seen, "holding the layout while degraded", (), mode), ()
    elapsed = seconds_since_reshape(
        seconds_since(since, now), seconds_since(old.get("lastReshapeCompletedTime"), now)
    )
    reshaping = previous is not None and not at_layout(live, previous, spec.gpu.per_node)
    window = window if window is not None else NO_SAMPLES
    if reshaping and was_held(old):
        # a held reshape changed nothing: the target follows the load, back to the groups
        # there are when the load returns to their band, without a cooldown
        reshaping = False
        now_layout = _inferred(live)
        back = _back_to(policy, window, now_layout)
        if back is not None:
            message = f"{previous} -> {now_layout}: the held reshape is dropped ({back.reason})"
            event = Event("Normal", "ReshapeCancelled", message)
            return Target(back.layout, stamp(now), seen, back.reason, (), mode), (event,)
    decision = choose_layout(policy, window, Current(previous, elapsed, reshaping))
    if not decision.changed:
        return Target(decision.layout, since, seen, decision.reason, (), mode), ()
    events: tuple[Event, ...] = ()
    if previous is not None:
        message = f"{previous} -> {decision.layout}: {decision.reason}"
        events = (Event("Normal", "ReshapeStarted", message),)
    return Target(decision.layout, stamp(now), seen, decision.reason, (), mode), events
