"""The objectives policy: for the observed load, the GPU layout that meets latency objectives
with the fewest GPUs, read off a performance profile (scaleserve/profiles.py).

Load is a request rate: the number of requests in flight depends on the layout serving them
(a slower layout holds each request longer), so `demand` turns the gateways' in-flight sample
into requests/s by Little's law on the current layout. Each candidate tensor-parallel degree
has a capacity under the objectives: the requests/s one replica completes at the most load
whose typical TTFT and time-between-tokens meet them. A layout's capacity is the sum over its
replicas. Layouts may mix degrees (e.g. 1 x TP4 + 4 x TP1), because that
is sometimes the cheapest way to the capacity needed. Among layouts that carry the load
the fewest GPUs win (found by a knapsack over GPU counts), then the lowest latency (the load
split over replicas in proportion to their capacity), then fewer degrees and wider replicas.
With no layout within maxGPUs that carries the load, the one with the most capacity wins and
the plan says so.

A degree's capacity is the profile's times the correction the endpoint's own measurements
learned (`Objectives.corrections`, correction.py): a degree that missed its objectives at a
load the profile said it meets is believed to carry less.

Hysteresis: a layout that carries the load is kept until a smaller one would carry
load / (1 - hysteresis), so a load hovering at a boundary does not flap. Windows, cooldowns and
the cost of a change are the caller's, as for the thresholds policy. Pure.

Lookahead (`expected`): a group started now serves only after its start-up, and a rising load
keeps rising meanwhile; nor does the next step start before this one is complete, so the layout
chosen now serves until a step chosen once it is Ready is Ready in turn: two start-ups. While
the window's trend is up the layout is sized for the load expected then (the window's mean
lags by half the window, plus two start-ups of the degrees the step starts), as predictive
autoscalers size scale-ups ahead. A falling trend never sizes a layout down early: on the way
down the observed load is used.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scaleserve.operator.layout import GroupShape, Layout, describe, group_shapes
from scaleserve.profiles import DegreeProfile, Profile


@dataclass(frozen=True)
class Objectives:
    ttft_ms: float | None
    tbt_ms: float | None
    min_gpus: int
    max_gpus: int
    per_node: int
    candidates: tuple[int, ...]
    hysteresis: float = 0.2
    # seconds of a rising trend to size ahead for (None: `lookahead_seconds`, from the
    # profile's start-ups; 0: none)
    lookahead_s: float | None = None
    ttft_p99_ms: float | None = None
    tbt_p99_ms: float | None = None
    # (degree, factor in (0, 1]): what the endpoint's own measurements believe of the profile
    # (correction.py); a degree not listed is taken at the profile's word
    corrections: tuple[tuple[int, float], ...] = ()

    def correction(self, tensor_parallel: int) -> float:
        return dict(self.corrections).get(tensor_parallel, 1.0)

    @property
    def limits(self) -> tuple[float | None, float | None, float | None, float | None]:
        """The objectives in `DegreeProfile.capacity`'s order."""
        return (self.ttft_ms, self.tbt_ms, self.ttft_p99_ms, self.tbt_p99_ms)


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
    capacity: dict[int, float]  # requests/s one replica completes within the objectives
    in_flight: dict[int, float]  # its requests in flight at that rate
    reachable: bool  # False: no degree meets the objectives; capacities are then raw

    def of(self, mix: Mix) -> float:
        return sum(replicas * self.capacity[tp] for tp, replicas in mix)

    def latency(self, mix: Mix, rate: float) -> tuple[float, float]:
        """(worst TBT, worst TTFT) over the mix's replicas at their share of the rate."""
        total = self.of(mix)
        worst = (0.0, 0.0)
        for tp, replicas in mix:
            degree = self.profile.degree(tp)
            if degree is None or replicas == 0:
                continue
            busy = self.in_flight[tp] * rate / total if total else rate
            worst = max(worst, (degree.tbt_ms(busy), degree.ttft_ms(busy)))
        return worst


def request_seconds(profile: Profile, degree: DegreeProfile, in_flight: float) -> float:
    """How long one request of the profile's workload takes on a replica running `in_flight`."""
    tokens = profile.workload.output_tokens
    return (degree.ttft_ms(in_flight) + (tokens - 1) * degree.tbt_ms(in_flight)) / 1000.0


def rate_capacity(
    profile: Profile, degree: DegreeProfile, *limits: float | None
) -> tuple[float, float]:
    """(requests/s, requests in flight) of one replica at the most load meeting the objectives
    (`Objectives.limits`; Little's law: rate = in flight / time per request); (0, 0) when one
    request misses them."""
    in_flight = degree.capacity(*limits)
    if in_flight <= 0:
        return 0.0, 0.0
    return in_flight / request_seconds(profile, degree, in_flight), in_flight


def demand(
    objectives: Objectives, profile: Profile, current: tuple[GroupShape, ...], in_flight: float
) -> float:
    """The request rate behind `in_flight` requests observed on the groups in `current`.

    In-flight counts depend on the layout that serves them (a slower layout holds each request
    longer), so the policy sizes layouts by rate, and this converts the gateways' in-flight
    sample by Little's law on the current layout (requests spread evenly over its replicas, as
    least-in-flight routing does). With no current replica (scale from zero) the requests
    waiting count as arriving within one request time of the fastest candidate at light load.
    """
    mix = [(tp, r) for tp, r in _mix_of(current) if profile.degree(tp) is not None]
    replicas = sum(r for _, r in mix)
    if in_flight <= 0:
        return 0.0
    if not replicas:
        fastest = min(
            request_seconds(profile, d, 1.0)
            for d in profile.degrees
            if d.tensor_parallel in objectives.candidates
        )
        return in_flight / fastest
    each = in_flight / replicas
    return sum(r * served_rate(profile, _degree(profile, tp), each) for tp, r in mix)


def served_rate(profile: Profile, degree: DegreeProfile, in_flight: float) -> float:
    """Requests/s a replica running `in_flight` completes (Little's law), never less than at a
    lower load. Past a knee where latency grows faster than the load (KV cache full, in the
    estimated profiles above a few hundred requests), a replica completes fewer requests with
    more running, but what arrives is still at least what it completed at the knee; sizing by
    the lower figure would give more sustained load fewer GPUs. Latency is linear between
    points, so the best lower load is a point's or `in_flight` itself."""
    loads = [float(p.concurrency) for p in degree.points if p.concurrency < in_flight]
    return max(x / request_seconds(profile, degree, x) for x in [*loads, in_flight])


def expected_in_flight(in_flight: float, trend: float, seconds: float) -> float:
    """The requests in flight expected `seconds` after the load measured `in_flight` while it
    rises by `trend` per second; on the way down (trend <= 0) the measured load itself."""
    return in_flight + max(0.0, trend) * max(0.0, seconds)


def startup_seconds(profile: Profile, degrees: Iterable[int]) -> float:
    """The longest start-to-ready time among those degrees of the profile (0 for none)."""
    times = [d.startup_seconds for d in profile.degrees if d.tensor_parallel in set(degrees)]
    return max(times, default=0.0)


def lookahead_seconds(profile: Profile, degrees: Iterable[int]) -> float:
    """The profile's lookahead for a step starting those degrees: two of their start-ups (the
    step's own, and the next one's, which starts once this one is complete)."""
    return 2.0 * startup_seconds(profile, degrees)


def expected(
    objectives: Objectives,
    profile: Profile,
    current: tuple[GroupShape, ...],
    in_flight: float,
    trend: float,
    lag_s: float,
) -> tuple[float, float, Plan]:
    """(the rate now, the rate sized for, the plan for it): `demand` on the window's mean
    `in_flight`, and with a rising `trend` (in flight per second) the rate expected when a
    group started now is Ready, `lag_s` (how far the mean lags, half the window) plus the
    lookahead later. The profile's lookahead is `lookahead_seconds` of the degrees the step
    starts: first of the slowest candidate, then of the plan's new groups."""
    rate = demand(objectives, profile, current, in_flight)
    seconds = objectives.lookahead_s
    if seconds == 0:
        return rate, rate, choose(objectives, profile, rate, current)
    if seconds is None:
        seconds = lookahead_seconds(profile, objectives.candidates)
    ahead = _ahead(objectives, profile, current, in_flight, trend, lag_s + seconds, rate)
    plan = choose(objectives, profile, ahead, current)
    if objectives.lookahead_s is None and ahead > rate:
        started = Counter(plan.shapes) - Counter(current)
        own = lookahead_seconds(profile, {s.tensor_parallel for s in started})
        if 0 < own < seconds:
            ahead = _ahead(objectives, profile, current, in_flight, trend, lag_s + own, rate)
            plan = choose(objectives, profile, ahead, current)
    return rate, ahead, plan


def _ahead(
    objectives: Objectives,
    profile: Profile,
    current: tuple[GroupShape, ...],
    in_flight: float,
    trend: float,
    seconds: float,
    rate: float,
) -> float:
    if trend <= 0:
        return rate
    load = expected_in_flight(in_flight, trend, seconds)
    return max(rate, demand(objectives, profile, current, load))


def _degree(profile: Profile, tensor_parallel: int) -> DegreeProfile:
    degree = profile.degree(tensor_parallel)
    assert degree is not None
    return degree


def choose(
    objectives: Objectives, profile: Profile, rate: float, current: tuple[GroupShape, ...]
) -> Plan:
    """The layout for `rate` requests/s (see `demand`), starting from the groups in `current`.
    The plan's capacity is in requests/s."""
    curves = _curves(objectives, profile)
    if not curves.capacity:
        return Plan(current, 0.0, False, "the profile has none of the candidate degrees")
    best = _best(objectives, curves, rate)
    now = _mix_of(current)
    now_gpus = sum(tp * r for tp, r in now)
    if not current or not objectives.min_gpus <= now_gpus <= objectives.max_gpus:
        return best
    now_capacity = curves.of(now) if all(tp in curves.capacity for tp, _ in now) else 0.0
    if now_capacity < rate:
        return best if best.capacity > now_capacity else _hold(current, now_capacity, rate)
    smaller = _best(objectives, curves, rate / (1.0 - objectives.hysteresis))
    if smaller.meets and smaller.gpus < now_gpus:
        return smaller
    return _hold(current, now_capacity, rate)


def _hold(current: tuple[GroupShape, ...], capacity: float, rate: float) -> Plan:
    meets = capacity >= rate
    verb = "carries" if meets else "is short of"
    return Plan(
        current,
        capacity,
        meets,
        f"{describe(current)} {verb} {rate:.1f} req/s (capacity {capacity:.1f})",
    )


def _curves(objectives: Objectives, profile: Profile) -> _Curves:
    degrees = [
        d
        for d in profile.degrees
        if d.tensor_parallel in objectives.candidates
        and objectives.per_node % d.tensor_parallel == 0
    ]
    wanted = objectives.limits
    reachable = any(d.capacity(*wanted) > 0 for d in degrees)
    if not reachable:
        wanted = (None, None, None, None)  # nothing meets the objectives unloaded: raw capacity
    rates = {d.tensor_parallel: rate_capacity(profile, d, *wanted) for d in degrees}
    return _Curves(
        profile,
        {tp: rate * objectives.correction(tp) for tp, (rate, _) in rates.items()},
        {tp: busy * objectives.correction(tp) for tp, (_, busy) in rates.items()},
        reachable,
    )


def _best(objectives: Objectives, curves: _Curves, rate: float) -> Plan:
    most = _most_capacity(objectives, curves)
    if curves.reachable:
        tolerance = 1e-9 * max(1.0, rate)
        counts = range(objectives.min_gpus, objectives.max_gpus + 1)
        gpus = next((g for g in counts if most[g] >= rate - tolerance), None)
        if gpus is not None:
            mixes = [m for m in _mixes(curves, gpus) if curves.of(m) >= rate - tolerance]
            mix = min(mixes, key=lambda m: _rank(curves, m, rate))
            return _plan(objectives, curves, mix, True, f"fewest GPUs carrying {rate:.1f} req/s")
        why = f"no layout within maxGPUs carries {rate:.1f} req/s"
    else:
        why = "no layout meets the objectives even unloaded"
    top = max(most[objectives.min_gpus :])
    gpus = next(g for g in range(objectives.min_gpus, len(most)) if most[g] >= top - 1e-9)
    mixes = [m for m in _mixes(curves, gpus) if curves.of(m) >= top - 1e-9]
    mix = min(mixes, key=lambda m: _rank(curves, m, rate))
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


def _rank(curves: _Curves, mix: Mix, rate: float) -> tuple[float, ...]:
    """Among mixes of equal GPUs: lower latency, then fewer degrees, then wider replicas."""
    tbt, ttft = curves.latency(mix, rate)
    return (tbt, ttft, len(mix), float(sum(r for _, r in mix)))


def _mix(counts: dict[int, int]) -> Mix:
    return tuple(sorted(((tp, r) for tp, r in counts.items() if r), reverse=True))


def _mix_of(shapes: Iterable[GroupShape]) -> Mix:
    replicas: Counter[int] = Counter()
    for s in shapes:
        replicas[s.tensor_parallel] += s.replicas
    return _mix(dict(replicas))
