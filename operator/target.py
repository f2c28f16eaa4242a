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
from scaleserve.operator.snapshot import EngineGroup, Snapshot
from scaleserve.operator.spec import EndpointSpec

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
    decision = choose_layout(
        policy,
        window if window is not None else NO_SAMPLES,
        Current(previous, elapsed, reshaping),
    )
    if not decision.changed:
        return Target(decision.layout, since, seen, decision.reason, (), mode), ()
    events: tuple[Event, ...] = ()
    if previous is not None:
        message = f"{previous} -> {decision.layout}: {decision.reason}"
        events = (Event("Normal", "ReshapeStarted", message),)
    return Target(decision.layout, stamp(now), seen, decision.reason, (), mode), events
