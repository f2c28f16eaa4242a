"""The objectives policy: for the observed load, the GPU layout that meets latency objectives
with the fewest GPUs, read off a performance profile (scaleserve/profiles.py).

Each candidate tensor-parallel degree has a capacity under the objectives: the most requests
one replica runs with its typical TTFT and time-between-tokens within them. A layout's capacity
is the sum over its replicas. Layouts may mix degrees (e.g. 1 x TP4 + 4 x TP1), because that
is sometimes the cheapest way to the capacity needed. Among layouts that carry the load
the fewest GPUs win (found by a knapsack over GPU counts), then the lowest latency (the load
split over replicas in proportion to their capacity), then fewer degrees and wider replicas.
With no layout within maxGPUs that carries the load, the one with the most capacity wins and
the plan says so.

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
    most = _most_capacity(objectives, curves)
    if curves.reachable:
        tolerance = 1e-9 * max(1.0, load)
        counts = range(objectives.min_gpus, objectives.max_gpus + 1)
        gpus = next((g for g in counts if most[g] >= load - tolerance), None)
        if gpus is not None:
            mixes = [m for m in _mixes(curves, gpus) if curves.of(m) >= load - tolerance]
            mix = min(mixes, key=lambda m: _rank(curves, m, load))
            return _plan(objectives, curves, mix, True, f"fewest GPUs carrying load {load:.1f}")
        why = f"no layout within maxGPUs carries load {load:.1f}"
    else:
        why = "no layout meets the objectives even unloaded"
    top = max(most[objectives.min_gpus :])
    gpus = next(g for g in range(objectives.min_gpus, len(most)) if most[g] >= top - 1e-9)
    mixes = [m for m in _mixes(curves, gpus) if curves.of(m) >= top - 1e-9]
    mix = min(mixes, key=lambda m: _rank(curves, m, load))
    return _plan(objectives, curves, mix, False, f"{why}; taking the most capacity")


def _most_capacity(objectives: Objectives, curves: _Curves) -> list[float]:
    """Per GPU count g up to maxGPUs, the most capacity of a layout of exactly g GPUs
    (-inf where no mix of the degrees adds up to g)."""
    most = [0.0] + [-math.inf] * objectives.max_gpus
    for g in range(1, objectives.max_gpus + 1):
        for tp, cap in curves.capacity.items():
            if tp <= g and most[g - tp] > -math.inf:
                most[g] = max(most[g], most[g - tp] + cap)
    return most


def _mixes(curves: _Curves, gpus: int) -> Iterator[Mix]:
    """Every mix of the degrees with exactly `gpus` GPUs."""
    degrees = sorted(curves.capacity, reverse=True)

    def fill(i: int, left: int, taken: dict[int, int]) -> Iterator[Mix]:
        if i == len(degrees) - 1:
            if left % degrees[i] == 0:
                yield _mix({**taken, degrees[i]: left // degrees[i]})
            return
        for r in range(left // degrees[i] + 1):
            yield from fill(i + 1, left - r * degrees[i], {**taken, degrees[i]: r})

    yield from fill(0, gpus, {})


def _plan(objectives: Objectives, curves: _Curves, mix: Mix, meets: bool, why: str) -> Plan:
    shapes = tuple(
        itertools.chain.from_iterable(
            group_shapes(Layout(r, tp), objectives.per_node) for tp, r in mix
        )
    )
    return Plan(shapes, curves.of(mix), meets, f"{describe(shapes)}: {why}")


def _rank(curves: _Curves, mix: Mix, load: float) -> tuple[float, ...]:
    """Among mixes of equal GPUs: lower latency, then fewer degrees, then wider replicas."""
    tbt, ttft = curves.latency(mix, load)
    return (tbt, ttft, len(mix), float(sum(r for _, r in mix)))


def _mix(counts: dict[int, int]) -> Mix:
    return tuple(sorted(((tp, r) for tp, r in counts.items() if r), reverse=True))


def _mix_of(shapes: Iterable[GroupShape]) -> Mix:
    replicas: Counter[int] = Counter()
    for s in shapes:
        replicas[s.tensor_parallel] += s.replicas
    return _mix(dict(replicas))
