"""The objectives policy: for the observed load, the GPU layout that meets latency objectives
with the fewest GPUs, read off a performance profile (scaleserve/profiles.py).

Each candidate tensor-parallel degree has a capacity under the objectives: the most requests
one replica runs with its typical TTFT and time-between-tokens within them. A layout's capacity
is the sum over its replicas. Layouts may mix two degrees (e.g. 1 x TP4 + 4 x TP1), because
that is sometimes the cheapest way to the capacity needed. Among layouts that carry the load
the fewest GPUs win, then the lowest latency (the load split over replicas in proportion to
their capacity), then fewer degrees and wider replicas. With no layout within maxGPUs that
carries the load, the one with the most capacity wins and the plan says so.

Hysteresis: a layout that carries the load is kept until a smaller one would carry
load / (1 - hysteresis), so a load hovering at a boundary does not flap. Windows, cooldowns and
the cost of a change are the caller's, as for the thresholds policy. Pure.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scaleserve.operator.layout import GroupShape, Layout, describe, group_shapes
from scaleserve.profiles import Profile


@dataclass(frozen=True)
class Objectives:
    ttft_ms: float | None
    tbt_ms: float | None
    min_gpus: int
    max_gpus: int
    per_node: int
    candidates: tuple[int, ...]
    hysteresis: float = 0.2


@dataclass(frozen=True)
class Plan:
    shapes: tuple[GroupShape, ...]
    capacity: float
    meets: bool
    reason: str

    @property
    def gpus(self) -> int:
        return sum(s.size for s in self.shapes)


Mix = tuple[tuple[int, int], ...]  # (tensor parallel, replicas), highest degree first


@dataclass(frozen=True)
class _Curves:
    """What the policy reads of a profile for one set of objectives."""

    profile: Profile
    capacity: dict[int, float]  # per-replica capacity by degree
    reachable: bool  # False: no degree meets the objectives; capacity is then raw capacity

    def of(self, mix: Mix) -> float:
        return sum(replicas * self.capacity[tp] for tp, replicas in mix)

    def latency(self, mix: Mix, load: float) -> tuple[float, float]:
        """(worst TBT, worst TTFT) over the mix's replicas at their share of the load."""
        total = self.of(mix)
        worst = (0.0, 0.0)
        for tp, replicas in mix:
            degree = self.profile.degree(tp)
            if degree is None or replicas == 0:
                continue
            share = load * self.capacity[tp] / total if total else load / replicas
            worst = max(worst, (degree.tbt_ms(share), degree.ttft_ms(share)))
        return worst


def choose(
    objectives: Objectives, profile: Profile, load: float, current: tuple[GroupShape, ...]
) -> Plan:
    """The layout for `load` concurrent requests, starting from the groups in `current`."""
    curves = _curves(objectives, profile)
    if not curves.capacity:
        return Plan(current, 0.0, False, "the profile has none of the candidate degrees")
    best = _best(objectives, curves, load)
    now = _mix_of(current)
    now_gpus = sum(tp * r for tp, r in now)
    if not current or not objectives.min_gpus <= now_gpus <= objectives.max_gpus:
        return best
    now_capacity = curves.of(now) if all(tp in curves.capacity for tp, _ in now) else 0.0
    if now_capacity < load:
        return best if best.capacity > now_capacity else _hold(current, now_capacity, load)
    smaller = _best(objectives, curves, load / (1.0 - objectives.hysteresis))
    if smaller.meets and smaller.gpus < now_gpus:
        return smaller
    return _hold(current, now_capacity, load)


def _hold(current: tuple[GroupShape, ...], capacity: float, load: float) -> Plan:
    meets = capacity >= load
    verb = "carries" if meets else "is short of"
    return Plan(
        current,
        capacity,
        meets,
        f"{describe(current)} {verb} load {load:.1f} (capacity {capacity:.1f})",
    )


def _curves(objectives: Objectives, profile: Profile) -> _Curves:
    degrees = [
        d
        for d in profile.degrees
        if d.tensor_parallel in objectives.candidates
        and objectives.per_node % d.tensor_parallel == 0
    ]
    wanted = (objectives.ttft_ms, objectives.tbt_ms)
    capacity = {d.tensor_parallel: d.capacity(*wanted) for d in degrees}
    if capacity and not any(capacity.values()):
        # nothing meets the objectives even unloaded: rank by raw capacity, never "meets"
        return _Curves(profile, {d.tensor_parallel: d.capacity(None, None) for d in degrees}, False)
    return _Curves(profile, capacity, True)


def _best(objectives: Objectives, curves: _Curves, load: float) -> Plan:
    if curves.reachable:
        fitting = list(_cheapest_mixes(objectives, curves, load))
        if fitting:
            mix = min(fitting, key=lambda m: _rank(curves, m, load))
            return _plan(objectives, curves, mix, True, f"fewest GPUs carrying load {load:.1f}")
        why = f"no layout within maxGPUs carries load {load:.1f}"
    else:
        why = "no layout meets the objectives even unloaded"

    def most(m: Mix) -> tuple[float, float, float]:
        _, tbt, ttft, *_ = _rank(curves, m, load)
        return (curves.of(m), -tbt, -ttft)

    mix = max(_largest_mixes(objectives, curves), key=most)
    return _plan(objectives, curves, mix, False, f"{why}; taking the most capacity")


def _plan(objectives: Objectives, curves: _Curves, mix: Mix, meets: bool, why: str) -> Plan:
    shapes = tuple(
        itertools.chain.from_iterable(
            group_shapes(Layout(r, tp), objectives.per_node) for tp, r in mix
        )
    )
    return Plan(shapes, curves.of(mix), meets, f"{describe(shapes)}: {why}")


def _rank(curves: _Curves, mix: Mix, load: float) -> tuple[float, ...]:
    tbt, ttft = curves.latency(mix, load)
    width = sum(r for _, r in mix)
    return (float(sum(tp * r for tp, r in mix)), tbt, ttft, len(mix), float(width))


def _pairs(curves: _Curves) -> Iterator[tuple[int, int]]:
    yield from itertools.combinations_with_replacement(sorted(curves.capacity, reverse=True), 2)


def _cheapest_mixes(objectives: Objectives, curves: _Curves, load: float) -> Iterator[Mix]:
    """Per pair of degrees and count of the wider one, the fewest narrower replicas that carry
    `load` within the GPU bounds (more GPUs than that never wins on the first criterion)."""
    lo, hi = objectives.min_gpus, objectives.max_gpus
    for a, b in _pairs(curves):
        for ra in range(hi // a + 1) if a != b else (0,):
            short = load - ra * curves.capacity[a]
            if short > 0 and curves.capacity[b] <= 0:
                continue
            rb = max(_ceil_div(short, curves.capacity[b]), _ceil_div(lo - ra * a, b))
            if ra * a + rb * b <= hi:
                yield _mix({a: ra, b: rb})


def _largest_mixes(objectives: Objectives, curves: _Curves) -> Iterator[Mix]:
    hi = objectives.max_gpus
    for a, b in _pairs(curves):
        for ra in range(hi // a + 1) if a != b else (0,):
            yield _mix({a: ra, b: (hi - ra * a) // b})


def _ceil_div(x: float, per: float) -> int:
    """The fewest units of `per` covering x (0 when x <= 0)."""
    return 0 if x <= 0 else math.ceil(x / per - 1e-9)


def _mix(counts: dict[int, int]) -> Mix:
    return tuple(sorted(((tp, r) for tp, r in counts.items() if r), reverse=True))


def _mix_of(shapes: Iterable[GroupShape]) -> Mix:
    replicas: Counter[int] = Counter()
    for s in shapes:
        replicas[s.tensor_parallel] += s.replicas
    return _mix(dict(replicas))
