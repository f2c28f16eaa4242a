"""Online correction of a performance profile from what the gateways measured (pure).

Per tensor-parallel degree the policy believes a capacity: the profile's (the most requests in
flight per replica whose latencies meet the objectives) times a correction in [FLOOR, 1]
learned from the endpoint's own requests (the gateways' `latency` report on /stats:
per degree, time-weighted requests in flight and histograms of TTFT and time between tokens).

- A miss: a measured quantile above its objective at a per-replica load within the believed
  capacity (the profile said the objectives are met there). The capacity is lowered to
  BACKOFF x that load, so the next choice puts fewer requests on each replica of that degree.
  A miss above the believed capacity changes nothing: it is what the belief predicts.
- Met with margin: every measured quantile at most (1 - MARGIN) x its objective while each
  replica runs at least RECOVERY_LOAD x the believed capacity. The correction grows by
  RECOVERY_STEP per pass towards 1 (the profile), so a capacity lost to a passing slowdown
  comes back slowly and a real one is probed again only gradually.
- Otherwise, and for degrees the layout does not run, the belief stays.

A quantile is read only from enough requests (MIN_REQUESTS for a p50, MIN_REQUESTS_P99 for a
p99). Lowering depends on the load that missed, not on the old factor, so reading the same
window on two passes does not lower twice. The beliefs live in the status
(`status.objectives.capacities[].correction`), so a restarted operator reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scaleserve.latency import DegreeLatency, Measured, count, quantile
from scaleserve.operator.objectives import Objectives
from scaleserve.profiles import Profile

FLOOR = 0.1  # never believe less than a tenth of the profile
BACKOFF = 0.9  # after a miss: 90 % of the per-replica load that missed
RECOVERY_STEP = 0.05  # per pass that meets the objectives with margin
MARGIN = 0.2  # "with margin": every quantile at most 80 % of its objective
RECOVERY_LOAD = 0.5  # ... with each replica at least half as busy as its believed capacity
MIN_REQUESTS = 20
MIN_REQUESTS_P99 = 100


@dataclass(frozen=True)
class Belief:
    """What one degree is believed to carry, relative to the profile, and the last verdict."""

    tensor_parallel: int
    correction: float = 1.0
    measurement: str = ""

    @property
    def source(self) -> str:
        return "measured" if self.correction < 1.0 else "profile"


Check = tuple[str, float, float]  # (what, measured ms, objective ms)


def beliefs_of(status: Mapping[str, Any]) -> dict[int, Belief]:
    """The beliefs the last status holds; a degree absent (or malformed) is the profile's."""
    objectives = status.get("objectives")
    entries = objectives.get("capacities") if isinstance(objectives, Mapping) else None
    out: dict[int, Belief] = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            tp = int(entry["tensorParallel"])
            factor = float(entry.get("correction", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if math.isfinite(factor):
            out[tp] = Belief(tp, min(1.0, max(FLOOR, factor)), str(entry.get("measurement") or ""))
    return out


def checks(objectives: Objectives, latency: DegreeLatency) -> list[Check]:
    """Each objective the measurements can speak to: (what, measured, objective)."""
    wanted = (
        ("TTFT p50", latency.ttft_ms, 0.5, objectives.ttft_ms, MIN_REQUESTS),
        ("TBT p50", latency.tbt_ms, 0.5, objectives.tbt_ms, MIN_REQUESTS),
        ("TTFT p99", latency.ttft_ms, 0.99, objectives.ttft_p99_ms, MIN_REQUESTS_P99),
        ("TBT p99", latency.tbt_ms, 0.99, objectives.tbt_p99_ms, MIN_REQUESTS_P99),
    )
    out = []
    for what, histogram, q, bound, least in wanted:
        value = quantile(histogram, q) if bound is not None and count(histogram) >= least else None
        if value is not None and bound is not None:
            out.append((what, value, bound))
    return out


def update(belief: Belief, profiled: float, load: float, found: list[Check]) -> Belief:
    """One degree's belief after a measurement: `profiled` its capacity by the profile
    (requests in flight per replica), `load` the measured requests in flight per replica."""
    tp, believed = belief.tensor_parallel, profiled * belief.correction
    at = f"at {load:.1f} in flight per replica"
    misses = [c for c in found if c[1] > c[2]]
    if misses:
        what, value, bound = max(misses, key=lambda c: c[1] / c[2])
        text = f"TP{tp}: {what} {value:.1f} ms misses {bound:g} ms {at}"
        if load > believed:
            return replace(belief, measurement=f"{text}, above the believed {believed:.1f}")
        factor = max(FLOOR, min(belief.correction, BACKOFF * load / profiled))
        note = f"{text}: capacity {profiled * factor:.1f} of the profile's {profiled:.1f}"
        return Belief(tp, factor, note)
    margin = all(value <= (1.0 - MARGIN) * bound for _, value, bound in found)
    if margin and belief.correction < 1.0 and load >= RECOVERY_LOAD * believed:
        factor = min(1.0, belief.correction + RECOVERY_STEP)
        note = f"TP{tp}: objectives met with margin {at}: capacity {profiled * factor:.1f}"
        return Belief(tp, factor, note)
    return replace(belief, measurement=f"TP{tp}: objectives met {at}")


def correct(
    objectives: Objectives,
    profile: Profile,
    old: Mapping[int, Belief],
    measured: Measured | None,
    replicas: Mapping[int, int],
) -> tuple[dict[int, Belief], tuple[str, ...]]:
    """The candidate degrees' beliefs after this pass's measurement (`replicas`: the ready
    replicas per degree the window measured), and the verdicts that lowered a capacity."""
    beliefs = {tp: old.get(tp, Belief(tp)) for tp in objectives.candidates}
    lowered: list[str] = []
    for tp, belief in beliefs.items():
        degree = profile.degree(tp)
        latency = measured.degree(tp) if measured is not None else None
        if degree is None or latency is None or replicas.get(tp, 0) <= 0:
            continue
        profiled = degree.capacity(*objectives.limits)
        found = checks(objectives, latency)
        if profiled <= 0 or not found:
            continue
        new = update(belief, profiled, latency.in_flight_avg / replicas[tp], found)
        if new.correction < belief.correction:
            lowered.append(new.measurement)
        beliefs[tp] = new
    return beliefs, tuple(lowered)


def applied(objectives: Objectives, beliefs: Mapping[int, Belief]) -> Objectives:
    """The objectives with the beliefs' corrections, for the policy."""
    corrections = tuple(sorted((tp, b.correction) for tp, b in beliefs.items() if b.correction < 1))
    return replace(objectives, corrections=corrections)
