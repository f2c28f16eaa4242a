"""The target of objectives mode (pure): `objectives.choose` on the request rate behind the
window's mean in-flight requests, within minGPUs..maxGPUs, scaled to zero after
scaleToZeroAfterSeconds without load (minGPUs 0) and back to one group at once when the gateways
hold requests. Each degree's capacity is the profile's as corrected by the gateways' latency
measurements (correction.py); the status shows both and why the target was chosen.

Like the thresholds policy, a full window is needed before a change, a reshape in progress is
finished first and a move to fewer GPUs waits for the cooldown (counted from the last reshape's
completion); a move to more GPUs does not wait. Every step towards the target is decide's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scaleserve.operator.correction import Belief, applied, beliefs_of, correct
from scaleserve.operator.layout import (
    GroupShape,
    Layout,
    describe,
    group_shapes,
    seconds_since_reshape,
)
from scaleserve.operator.objectives import (
    Objectives,
    choose,
    demand,
    expected,
    lookahead_seconds,
    rate_capacity,
)
from scaleserve.operator.snapshot import Snapshot
from scaleserve.operator.spec import Autoscaling, EndpointSpec
from scaleserve.operator.target import (
    NO_SAMPLES,
    Event,
    Target,
    seconds_since,
    stamp,
    was_held,
)
from scaleserve.profiles import Profile, ProfileError


def objectives_of(spec: EndpointSpec) -> Objectives:
    policy = spec.autoscaling
    assert policy is not None
    assert policy.objectives is not None
    o = policy.objectives
    return Objectives(
        ttft_ms=o.ttft_p50_ms,
        tbt_ms=o.tbt_p50_ms,
        # zero is reached only by the idle rule (scaleToZeroAfterSeconds), never by the load
        min_gpus=max(1, policy.least),
        max_gpus=policy.budget,
        per_node=spec.gpu.per_node,
        candidates=policy.tensor_parallel_candidates,
        hysteresis=policy.hysteresis,
        lookahead_s=policy.scale_up_lookahead_seconds,
        ttft_p99_ms=o.ttft_p99_ms,
        tbt_p99_ms=o.tbt_p99_ms,
    )


def trend_seconds(spec: EndpointSpec, profile: Profile | None) -> float:
    """How far back objectives mode reads the load's trend: over one lookahead (the rise over
    the last lookahead predicts the rise over the next; a window-long slope of a noisy load is
    mostly noise); 0 (the window's span) in other modes or without a profile."""
    policy = spec.autoscaling
    if policy is None or policy.mode != "objectives":
        return 0.0
    if policy.scale_up_lookahead_seconds is not None:
        return float(policy.scale_up_lookahead_seconds)
    if profile is None:
        return 0.0
    return lookahead_seconds(profile, policy.tensor_parallel_candidates)


def check_profile(spec: EndpointSpec, profile: Profile) -> None:
    """Raise ProfileError (naming the field) when the profile cannot serve the spec's
    objectives: no candidate degree in it, or a p99 objective without the p99s to read."""
    policy = spec.autoscaling
    assert policy is not None
    assert policy.objectives is not None
    degrees = [d for d in profile.degrees if d.tensor_parallel in policy.tensor_parallel_candidates]
    if not degrees:
        raise ProfileError(
            "tensorParallel: no entry for any spec.autoscaling.tensorParallelCandidates degree"
        )
    wanted = {"ttftP99Ms": policy.objectives.ttft_p99_ms, "tbtP99Ms": policy.objectives.tbt_p99_ms}
    for field, bound in wanted.items():
        if bound is None:
            continue
        for d in degrees:
            missing = d.missing_p99(field)
            if missing is not None:
                i = profile.degrees.index(d)
                raise ProfileError(
                    f"tensorParallel.{i}.points.{missing}.{field}: required by "
                    f"spec.autoscaling.objectives.{field}"
                )


def first_layout(objectives: Objectives, profile: Profile) -> tuple[GroupShape, ...]:
    """The layout an endpoint starts with (and comes back from zero to): the fewest GPUs, at
    least one group, for no load."""
    return choose(objectives, profile, 0.0, ()).shapes


def capacities(
    objectives: Objectives, profile: Profile, beliefs: Mapping[int, Belief]
) -> list[dict[str, Any]]:
    """What one replica of each candidate degree carries within the objectives: by the
    profile, and as believed (the profile's times the correction measurements taught)."""
    out = []
    for tp in objectives.candidates:
        degree = profile.degree(tp)
        if degree is None or objectives.per_node % tp:
            continue
        rate, in_flight = rate_capacity(profile, degree, *objectives.limits)
        belief = beliefs.get(tp, Belief(tp))
        entry = {
            "tensorParallel": tp,
            "requestsPerSecond": round(rate * belief.correction, 3),
            "inFlight": round(in_flight * belief.correction, 2),
            "profileRequestsPerSecond": round(rate, 3),
            "profileInFlight": round(in_flight, 2),
            "correction": round(belief.correction, 4),
            "source": belief.source,
        }
        if belief.measurement:
            entry["measurement"] = belief.measurement
        out.append(entry)
    return out


def parse_groups(text: str | None, per_node: int) -> tuple[GroupShape, ...] | None:
    """The groups of a target as the status shows it ("1x8+4x1", "0" for none); None if the
    text is not a target."""
    if text is None:
        return None
    if text.strip() == "0":
        return ()
    shapes: list[GroupShape] = []
    for part in text.split("+"):
        layout = Layout.parse(part)
        if layout is None or per_node % layout.tensor_parallel:
            return None
        shapes.extend(group_shapes(layout, per_node))
    return tuple(shapes)


def choose_objectives(
    spec: EndpointSpec, snap: Snapshot, hold: bool, now: datetime
) -> tuple[Target, tuple[Event, ...]]:
    """decide's chooser in objectives mode (target.Chooser)."""
    old, window = snap.status, snap.window or NO_SAMPLES
    seen = round(window.mean, 2) if window.mean is not None else old.get("observedConcurrency")
    previous = parse_groups(old.get("targetLayout"), spec.gpu.per_node)
    since = old.get("lastReshapeTime")
    if snap.profile is None:
        shapes = previous if previous is not None else tuple(g.group.shape for g in snap.serving)
        why = snap.profile_error or "no performance profile"
        kept = (old.get("objectives") or {}).get("capacities")  # the beliefs outlive the profile
        facts = {"capacities": kept} if kept else {}
        status = {
            "mode": "objectives",
            "objectives": {**facts, "state": "NoProfile", "reason": why},
        }
        return Target(None, since, seen, why, shapes, status, problem=why), ()
    beliefs = beliefs_of(old)
    objectives = applied(objectives_of(spec), beliefs)
    facts = {"capacities": capacities(objectives, snap.profile, beliefs)}
    if previous is None:
        shapes = first_layout(objectives, snap.profile)
        note = f"initial layout {describe(shapes)}"
        status = {
            "mode": "objectives",
            "objectives": {**facts, "state": "Starting", "reason": note},
        }
        return Target(None, stamp(now), seen, note, shapes, status), ()
    idle = _idle_since(old, window.mean, snap.held, now)
    state = (old.get("objectives") or {}).get("state") or "Starting"
    out = _Out(previous, since, seen, now, idle, facts, state)
    return _steady(spec, snap, hold, objectives, snap.profile, out)


@dataclass
class _Out:
    """How a pass that has a previous target says what it chose."""

    previous: tuple[GroupShape, ...]
    since: str | None
    seen: float | None
    now: datetime
    idle: str | None
    facts: dict[str, Any]
    state: str

    def _status(self, note: str, state: str) -> dict[str, Any]:
        return {
            "mode": "objectives",
            "idleSince": self.idle,
            "objectives": {**self.facts, "state": state, "reason": note},
        }

    def keep(
        self, note: str, state: str = "", events: tuple[Event, ...] = ()
    ) -> tuple[Target, tuple[Event, ...]]:
        status = self._status(note, state or self.state)
        return Target(None, self.since, self.seen, note, self.previous, status), events

    def move(
        self,
        shapes: tuple[GroupShape, ...],
        note: str,
        state: str,
        reason: str,
        events: tuple[Event, ...] = (),
    ) -> tuple[Target, tuple[Event, ...]]:
        message = f"{describe(self.previous)} -> {describe(shapes)}: {note}"
        status = self._status(note, state)
        target = Target(None, stamp(self.now), self.seen, note, shapes, status)
        return target, (*events, Event("Normal", reason, message))


def _steady(
    spec: EndpointSpec,
    snap: Snapshot,
    hold: bool,
    objectives: Objectives,
    profile: Profile,
    out: _Out,
) -> tuple[Target, tuple[Event, ...]]:
    policy, window, previous, now = (
        spec.autoscaling,
        snap.window or NO_SAMPLES,
        out.previous,
        out.now,
    )
    assert policy is not None
    if not previous:  # scaled to zero: the gateways hold what arrives until a group is ready
        # `held` is what a gateway reports; one that predates it still counts requests in flight
        if snap.held > 0 or (window.mean or 0.0) > 0:
            note = f"{snap.held} request(s) held by the gateways" if snap.held else "requests"
            return out.move(first_layout(objectives, profile), note, "Starting", "ScaleFromZero")
        return out.keep("scaled to zero; the first request brings a group up", "ScaledToZero")
    if hold:
        return out.keep("holding the layout while degraded")
    if _idle_for(policy, out.idle, now):
        note = f"no load for {policy.idle_seconds}s"
        return out.move((), note, "ScaledToZero", "ScaleToZero")
    if window.mean is None or window.span_s < policy.window_seconds:
        return out.keep("collecting samples")
    live = snap.serving
    shapes = tuple(g.group.shape for g in live)
    if sorted(shapes) != sorted(previous) and was_held(snap.status) and live:
        return _held(objectives, profile, shapes, window.mean, out)
    if sorted(shapes) != sorted(previous) or not all(g.is_ready for g in live):
        return out.keep(f"reshape to {describe(previous)} in progress")
    elapsed = seconds_since_reshape(
        seconds_since(out.since, now),
        seconds_since(snap.status.get("lastReshapeCompletedTime"), now),
    )
    objectives, corrected = _measure(snap, objectives, profile, elapsed, out)
    lag = policy.window_seconds / 2  # the window's mean is the load half a window ago
    rate, ahead, plan = expected(objectives, profile, previous, window.mean, window.trend, lag)
    out.facts.update(requestsPerSecond=round(rate, 3), capacity=round(plan.capacity, 3))
    if ahead > rate:
        out.facts["expectedRequestsPerSecond"] = round(ahead, 3)
    state = "Met" if plan.meets else "Unmet"
    reason = plan.reason + _believed(plan.shapes, out.facts["capacities"])
    if ahead > rate:
        reason += f" (rising: {rate:.1f} req/s now, {ahead:.1f} expected ahead)"
    fewer = plan.gpus < sum(s.size for s in previous)
    if fewer and elapsed is not None and elapsed < policy.cooldown_seconds:
        left = policy.cooldown_seconds - elapsed
        return out.keep(f"cooldown: {left:.0f}s before {reason}", state, corrected)
    if sorted(plan.shapes) == sorted(previous):
        return out.keep(reason, state, corrected)
    return out.move(plan.shapes, reason, state, "ReshapeStarted", corrected)


def _measure(
    snap: Snapshot,
    objectives: Objectives,
    profile: Profile,
    elapsed: float | None,
    out: _Out,
) -> tuple[Objectives, tuple[Event, ...]]:
    """Correct the beliefs from the gateways' latency report, once the layout has run for a
    whole stats window (a window that straddles a reshape measures two layouts at once)."""
    measured = snap.latency
    if measured is None or (elapsed is not None and elapsed < measured.window_s):
        return objectives, ()
    replicas: dict[int, int] = {}
    for g in snap.serving:
        replicas[g.group.tensor_parallel] = replicas.get(g.group.tensor_parallel, 0) + g.ready
    beliefs, lowered = correct(objectives, profile, beliefs_of(snap.status), measured, replicas)
    objectives = applied(objectives, beliefs)
    out.facts["capacities"] = capacities(objectives, profile, beliefs)
    return objectives, tuple(Event("Normal", "CapacityCorrected", text) for text in lowered)


def _believed(shapes: tuple[GroupShape, ...], entries: list[dict[str, Any]]) -> str:
    """What the reason adds when the chosen layout's degrees are sized by measurement."""
    used = {s.tensor_parallel for s in shapes}
    measured = [
        f"TP{e['tensorParallel']} {e['inFlight']:g} of the profile's {e['profileInFlight']:g}"
        for e in entries
        if e["tensorParallel"] in used and e.get("source") == "measured"
    ]
    return f" (measured in flight per replica: {', '.join(measured)})" if measured else ""


def _held(
    objectives: Objectives,
    profile: Profile,
    shapes: tuple[GroupShape, ...],
    in_flight: float,
    out: _Out,
) -> tuple[Target, tuple[Event, ...]]:
    """A held reshape changed nothing: the target follows the load from the groups there are,
    back to them (no cooldown) when they carry it again."""
    plan = choose(objectives, profile, demand(objectives, profile, shapes, in_flight), shapes)
    state = "Met" if plan.meets else "Unmet"
    if sorted(plan.shapes) == sorted(out.previous):
        return out.keep(f"reshape to {describe(out.previous)} held", state)
    if sorted(plan.shapes) == sorted(shapes):
        note = f"the held reshape is dropped ({plan.reason})"
        return out.move(shapes, note, state, "ReshapeCancelled")
    return out.move(plan.shapes, plan.reason, state, "ReshapeStarted")


def _idle_since(old: Mapping[str, Any], mean: float | None, held: int, now: datetime) -> str | None:
    """When the load last fell to zero (None while there is load or no sample yet)."""
    if mean is None or mean > 0 or held > 0:
        return None
    previous = old.get("idleSince")
    return previous if isinstance(previous, str) else stamp(now)


def _idle_for(policy: Autoscaling, idle: str | None, now: datetime) -> bool:
    if policy.least > 0 or idle is None:
        return False
    elapsed = seconds_since(idle, now)
    return elapsed is not None and elapsed >= policy.idle_seconds
