"""Build the strategies to compare from one description and run them on the same traffic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaleserve.operator import objectives
from scaleserve.operator.builders.engine import PRESTOP_SLEEP_S
from scaleserve.operator.layout import Layout, group_shapes
from scaleserve.operator.spec import parse_spec
from scaleserve.profiles import Profile
from scaleserve.simulate.control import ObjectivesControl, ThresholdsControl
from scaleserve.simulate.endpoint import Limits
from scaleserve.simulate.metrics import Objectives, summarize
from scaleserve.simulate.run import Outcome, simulate
from scaleserve.simulate.strategies import ReplicaAutoscaler, Scaleserve, Static, Strategy
from scaleserve.simulate.traffic import Sweep, Traffic

DEFAULT_OBJECTIVES = Objectives(ttft_ms=1000.0, tbt_ms=25.0)


@dataclass(frozen=True)
class Setup:
    """One endpoint's bounds and policies: `gpus` is the budget (maxGPUs), `surge` the GPUs a
    reshape may borrow; the cluster has gpus + surge."""

    gpus: int = 8
    surge: int = 8
    per_node: int = 8
    candidates: tuple[int, ...] = (8, 1)
    thresholds: tuple[float, ...] = (64.0,)
    window_s: int = 60
    cooldown_s: int = 300
    objectives: Objectives = DEFAULT_OBJECTIVES
    objective_candidates: tuple[int, ...] = (8, 4, 2, 1)
    lookahead_s: float | None = None  # objectives mode's scaleUpLookaheadSeconds
    termination_s: float = float(PRESTOP_SLEEP_S)  # a deleted pod's, GPUs held meanwhile

    def spec(self) -> dict[str, Any]:
        return {
            "model": {"uri": "hf://simulated"},
            "gpu": {"perNode": self.per_node},
            "autoscaling": {
                "gpuBudget": self.gpus,
                "surgeGPUs": self.surge,
                "tensorParallelCandidates": list(self.candidates),
                "concurrencyThresholds": list(self.thresholds),
                "windowSeconds": self.window_s,
                "cooldownSeconds": self.cooldown_s,
            },
        }


def build(name: str, setup: Setup, profile: Profile) -> Strategy:
    """`static:RxT`, `replicas:T` (TP fixed, in-flight target 80% of what one replica carries
    within the objectives by the profile), `thresholds` or `objectives[:MIN]` (minGPUs MIN,
    default 1; maxGPUs the budget)."""
    kind, _, arg = name.partition(":")
    if kind == "static":
        layout = Layout.parse(arg)
        if layout is None:
            raise ValueError(f"{name}: expected static:REPLICASxTP, e.g. static:1x8")
        return Static(group_shapes(layout, setup.per_node))
    if kind == "replicas":
        tp = int(arg or "1")
        degree = profile.degree(tp)
        if degree is None:
            raise ValueError(f"{name}: the profile has no tensorParallel {tp}")
        o = setup.objectives
        target = max(0.8 * degree.capacity(o.ttft_ms, o.tbt_ms), 1.0)
        return ReplicaAutoscaler(tp, target, setup.gpus)
    if kind == "thresholds":
        return Scaleserve(ThresholdsControl(parse_spec(setup.spec())), setup.gpus + setup.surge)
    if kind == "objectives":
        least = int(arg or "1")
        policy = objectives.Objectives(
            ttft_ms=setup.objectives.ttft_ms,
            tbt_ms=setup.objectives.tbt_ms,
            min_gpus=least,
            max_gpus=setup.gpus,
            per_node=setup.per_node,
            candidates=setup.objective_candidates,
            lookahead_s=setup.lookahead_s,
        )
        return Scaleserve(
            ObjectivesControl(policy, profile, setup.window_s, setup.cooldown_s, setup.surge),
            setup.gpus + setup.surge,
            mode=f"objectives {least}-{setup.gpus} GPUs",
        )
    raise ValueError(f"unknown strategy {name!r} (static:RxT, replicas:T, thresholds, objectives)")


def compare(
    profile: Profile,
    traffic: Traffic,
    names: tuple[str, ...],
    setup: Setup,
    *,
    seed: int = 0,
    routing: str = "least-in-flight",
    progress: Callable[[str], Callable[[float], None] | None] = lambda _name: None,
) -> list[tuple[Outcome, dict[str, Any]]]:
    """Every strategy on the same traffic (same seed: the same arrivals and lengths)."""
    results = []
    for name in names:
        strategy = build(name, setup, profile)
        limits = Limits(termination_s=setup.termination_s)
        outcome = simulate(
            profile,
            traffic,
            strategy,
            seed=seed,
            routing=routing,
            limits=limits,
            progress=progress(name),
        )
        # a sweep's bins are its stages: one row per stream count
        bins = len(traffic.levels) if isinstance(traffic, Sweep) else 48
        results.append((outcome, summarize(outcome, setup.objectives, bins)))
    return results
