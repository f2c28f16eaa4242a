"""Layouts (replicas x tensor-parallel), GPU groups, and the concurrency -> layout policy.

A layout is split into GPU groups the size of one node (the last one smaller when the total
is not a multiple of a node); a group is the unit of placement and of reshaping.
`choose_layout` is the autoscaling policy: bands of concurrency, hysteresis and cooldown.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from scaleserve.operator.spec import Autoscaling, EndpointSpec

_LAYOUT_RE = re.compile(r"^(\d+)x(\d+)$")
_GROUP_RE = re.compile(r"^g(\d+)-tp(\d+)$")


@dataclass(frozen=True, order=True)
class Layout:
    """A homogeneous layout: `replicas` engines of `tensor_parallel` GPUs each."""

    replicas: int
    tensor_parallel: int

    @property
    def gpus(self) -> int:
        return self.replicas * self.tensor_parallel

    def __str__(self) -> str:
        return f"{self.replicas}x{self.tensor_parallel}"

    @classmethod
    def parse(cls, text: str) -> Layout | None:
        match = _LAYOUT_RE.match(text.strip())
        if not match:
            return None
        replicas, tp = int(match.group(1)), int(match.group(2))
        return cls(replicas, tp) if replicas > 0 and tp > 0 else None


@dataclass(frozen=True, order=True)
class GroupShape:
    """A GPU group to exist: `size` GPUs on one node, split into engines of `tensor_parallel`."""

    size: int
    tensor_parallel: int

    @property
    def replicas(self) -> int:
        return self.size // self.tensor_parallel


@dataclass(frozen=True, order=True)
class Group:
    """A GPU group that exists (or is planned): one engine StatefulSet."""

    name: str
    size: int
    tensor_parallel: int

    @property
    def shape(self) -> GroupShape:
        return GroupShape(self.size, self.tensor_parallel)

    @property
    def replicas(self) -> int:
        return self.size // self.tensor_parallel

    @property
    def index(self) -> int | None:
        match = _GROUP_RE.match(self.name)
        return int(match.group(1)) if match else None


def group_name(index: int, tensor_parallel: int) -> str:
    return f"g{index}-tp{tensor_parallel}"


def group_shapes(layout: Layout, per_node: int) -> tuple[GroupShape, ...]:
    """Split a layout into node-sized groups; `layout.tensor_parallel` must divide `per_node`."""
    total = layout.gpus
    full, rest = divmod(total, per_node)
    shapes = [GroupShape(per_node, layout.tensor_parallel)] * full
    if rest:
        shapes.append(GroupShape(rest, layout.tensor_parallel))
    return tuple(shapes)


def describe(groups: Iterable[GroupShape | Group]) -> str:
    """Human form of a set of groups, e.g. "1x8" or "1x8+4x1" (highest TP first); "0" if none."""
    replicas: Counter[int] = Counter()
    for g in groups:
        replicas[g.tensor_parallel] += g.size // g.tensor_parallel
    if not replicas:
        return "0"
    return "+".join(f"{replicas[tp]}x{tp}" for tp in sorted(replicas, reverse=True))


def layout_for_band(policy: Autoscaling, band: int) -> Layout:
    tp = policy.tensor_parallel_candidates[band]
    return Layout(policy.budget // tp, tp)


def initial_layout(spec: EndpointSpec) -> Layout:
    """The layout an endpoint starts with: its static layout, or the lowest-concurrency band."""
    if spec.layout is not None:
        return Layout(spec.layout.replicas, spec.layout.tensor_parallel)
    assert spec.autoscaling is not None
    return layout_for_band(spec.autoscaling, 0)


@dataclass(frozen=True)
class Window:
    """Concurrency samples over the averaging window; trend is their least-squares slope
    (requests in flight per second; 0 with fewer than two samples)."""

    mean: float | None
    span_s: float
    samples: int
    trend: float = 0.0


@dataclass(frozen=True)
class Current:
    """The layout in force and how long the cooldown has run (None: never, or unknown).

    seconds_since_change counts from the completion of the last reshape (see
    `seconds_since_reshape`); reshaping says the groups have not reached `layout` yet.
    """

    layout: Layout | None
    seconds_since_change: float | None
    reshaping: bool = False


def seconds_since_reshape(started: float | None, completed: float | None) -> float | None:
    """How long the cooldown has run: since the last reshape completed.

    started / completed: seconds since the target layout last changed / since a reshape last
    completed (None: unknown). A completion older than the last start belongs to an earlier
    reshape; then (a status written before completions were recorded) the start counts.
    """
    if completed is not None and (started is None or completed <= started):
        return completed
    return started


@dataclass(frozen=True)
class Decision:
    layout: Layout
    changed: bool
    reason: str


def _band_for(policy: Autoscaling, concurrency: float) -> int:
    return sum(1 for t in policy.concurrency_thresholds if concurrency >= t)


def _band_with_hysteresis(policy: Autoscaling, concurrency: float, band: int) -> int:
    up = _band_for(policy, concurrency)
    if up > band:
        return up
    keep = 1.0 - policy.hysteresis
    down = sum(1 for t in policy.concurrency_thresholds if concurrency >= t * keep)
    return min(band, down)


def choose_layout(policy: Autoscaling, window: Window, current: Current) -> Decision:
    """Pick the layout for the averaged concurrency.

    - No current layout: the lowest-concurrency band (highest TP).
    - A current layout that is not one of the policy's (the spec changed): the band for the
      concurrency now, without waiting for the cooldown.
    - Otherwise hold while the window is not yet full, a reshape is still in progress, or the
      cooldown (counted from the completion of the last reshape) has not elapsed; then move up a
      band when concurrency reaches its threshold and back down only once it falls below
      threshold x (1 - hysteresis).
    """
    bands = [layout_for_band(policy, i) for i in range(len(policy.tensor_parallel_candidates))]
    if current.layout is None:
        return Decision(bands[0], True, "initial layout")
    if current.layout not in bands:
        band = _band_for(policy, window.mean or 0.0)
        return Decision(bands[band], True, f"{current.layout} is not an autoscaling layout")
    band = bands.index(current.layout)
    if window.mean is None or window.samples == 0 or window.span_s < policy.window_seconds:
        return Decision(current.layout, False, "collecting concurrency samples")
    wanted = _band_with_hysteresis(policy, window.mean, band)
    if wanted == band:
        return Decision(current.layout, False, f"concurrency {window.mean:.1f} within band")
    if current.reshaping and policy.cooldown_seconds > 0:
        return Decision(
            current.layout,
            False,
            f"reshape to {current.layout} in progress; the cooldown starts when it completes",
        )
    since = current.seconds_since_change
    if since is not None and since < policy.cooldown_seconds:
        left = policy.cooldown_seconds - since
        return Decision(current.layout, False, f"cooldown: {left:.0f}s before {bands[wanted]}")
    return Decision(
        bands[wanted],
        True,
        f"concurrency {window.mean:.1f} -> {bands[wanted]} (was {current.layout})",
    )
