"""A thresholds-mode reshape under a closed-loop ramp, timed as the local stack's is measured.

Closed-loop streams hold at the ramp's first level, then step up through its levels and hold
the last one; the operator (decide, every `interval_s`, on the gateways' window) moves the
endpoint once the load crosses its threshold. From the moment the offered load reaches the
threshold (the first step at or above it) four intervals are read: to the operator's
ReshapeStarted, to every new group Ready, to the last group of the first layout deleted (it
drains: it is deleted when its last request ends, or at the drain bound) and to its pods gone
(they terminate for `termination_s`, their GPUs held). As on the local stack, the
ramp begins when the first layout is Ready, so the cooldown (counted from the completion of the
last reshape, the first layout's included) runs from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaleserve.operator.spec import EndpointSpec
from scaleserve.profiles import Profile
from scaleserve.simulate.control import ThresholdsControl
from scaleserve.simulate.endpoint import Limits
from scaleserve.simulate.run import simulate
from scaleserve.simulate.strategies import Scaleserve
from scaleserve.simulate.traffic import Lengths, Sweep

# each from the threshold's crossing: ReshapeStarted, every new group Ready, the operator's
# delete of the last old group (drained), the last old pod gone (terminated)
INTERVALS = ("started_s", "new_ready_s", "deleted_s", "old_gone_s")


@dataclass(frozen=True)
class Ramp:
    levels: tuple[int, ...]  # closed-loop streams at each step
    step_s: float
    before_s: float  # at the first level before the ramp
    hold_s: float  # at the last level after it
    input_tokens: int
    output_tokens: int

    def crossing(self, threshold: float) -> float:
        """When the offered load first reaches `threshold`: the start of that step."""
        step = next(i for i, n in enumerate(self.levels) if n >= threshold)
        return self.before_s + step * self.step_s

    def sweep(self) -> Sweep:
        """The ramp as simulated streams, in stages of `step_s` (before and hold rounded up)."""
        before = -(-self.before_s // self.step_s)
        hold = -(-self.hold_s // self.step_s)
        levels = (self.levels[0],) * int(before) + self.levels + (self.levels[-1],) * int(hold)
        fixed = Lengths("fixed", self.input_tokens, self.output_tokens)
        return Sweep(levels=levels, stage_s=self.step_s, lengths=fixed)


def with_startups(profile: Profile, startups: dict[int, float]) -> Profile:
    """The profile's first degree as every degree of `startups`, each with its start-to-ready
    time (the reshape's timing depends on start-up, drain and the control loop; the engines'
    speed only sets how long the last requests take to drain)."""
    base = profile.degrees[0]
    degrees = tuple(
        base.model_copy(update={"tensor_parallel": tp, "startup_seconds": s})
        for tp, s in sorted(startups.items())
    )
    return profile.model_copy(update={"degrees": degrees})


def reshape_timeline(
    profile: Profile,
    spec: EndpointSpec,
    ramp: Ramp,
    *,
    cluster_gpus: int,
    interval_s: float,
    max_seqs: int,
    termination_s: float,
) -> dict[str, Any]:
    """The simulated intervals (None: did not happen within the run) and the layouts."""
    assert spec.autoscaling is not None
    assert spec.autoscaling.concurrency_thresholds
    threshold = spec.autoscaling.concurrency_thresholds[0]
    control = ThresholdsControl(spec)
    control.completed(0.0)
    strategy = Scaleserve(control, cluster_gpus, interval_s=interval_s)
    drain = spec.engine.drain_timeout_seconds
    limits = Limits(max_seqs, drain_timeout_s=drain, termination_s=termination_s)
    outcome = simulate(profile, ramp.sweep(), strategy, limits=limits)
    history = outcome.endpoint.history
    first = {name for t, name, _ in history if t == 0.0}
    crossed = ramp.crossing(threshold)
    started = next((t for t in strategy.started if t >= crossed), None)
    new_ready = [t for t, name, state in history if name not in first and state == "ready"]
    deleted = [t for t, name, state in history if name in first and state == "terminating"]
    old_gone = [t for t, name, state in history if name in first and state == "gone"]
    times = {
        "started_s": started,
        "new_ready_s": max(new_ready) if new_ready else None,
        "deleted_s": max(deleted) if len(deleted) == len(first) else None,
        "old_gone_s": max(old_gone) if len(old_gone) == len(first) else None,
    }
    return {
        "crossed_at_s": crossed,
        "intervals": {k: None if t is None else round(t - crossed, 2) for k, t in times.items()},
        "layouts": [layout for _, _, _, layout in outcome.endpoint.timeline],
        "violations": list(outcome.violations),
    }
