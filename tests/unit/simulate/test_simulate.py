"""Whole simulations, short: conservation of requests and the operator's invariants."""

from __future__ import annotations

import pytest

from scaleserve.operator.layout import GroupShape
from scaleserve.operator.objectives import Objectives as Goals
from scaleserve.operator.spec import parse_spec
from scaleserve.profiles import parse_profile
from scaleserve.simulate.control import ObjectivesControl, ThresholdsControl
from scaleserve.simulate.endpoint import Endpoint, Limits
from scaleserve.simulate.engine import Request
from scaleserve.simulate.events import EventQueue
from scaleserve.simulate.metrics import Objectives, summarize
from scaleserve.simulate.run import simulate
from scaleserve.simulate.strategies import ReplicaAutoscaler, Scaleserve, Static
from scaleserve.simulate.traffic import Lengths, OpenLoop, Sweep, Trace
from tests.fixtures.profiles import make_profile

pytestmark = pytest.mark.unit

# hand-written, shaped like an 8B model on one 8-GPU node: wider TP is faster per request,
# narrower TP carries more load per GPU
PROFILE = parse_profile(
    {
        "apiVersion": "scaleserve.io/v1alpha1",
        "kind": "PerformanceProfile",
        "model": "hand-written",
        "gpu": "test",
        "engine": "test",
        "workload": {"inputTokens": 512, "outputTokens": 64},
        "provenance": {"source": "published", "tool": "hand-written", "date": "2026-12-06"},
        "tensorParallel": [
            {
                "tensorParallel": tp,
                "startupSeconds": 30 + 5 * tp,
                "points": [
                    {"concurrency": 1, "ttftMs": 40 / tp**0.6, "tbtMs": 8 / tp**0.6},
                    {"concurrency": 64, "ttftMs": 400 / tp**0.8, "tbtMs": 20 / tp**0.5},
                    {"concurrency": 256, "ttftMs": 1600 / tp**0.8, "tbtMs": 60 / tp**0.5},
                ],
            }
            for tp in (1, 2, 4, 8)
        ],
    }
)
SPEC = parse_spec(
    {
        "model": {"uri": "hf://m"},
        "autoscaling": {
            "gpuBudget": 8,
            "surgeGPUs": 8,
            "tensorParallelCandidates": [8, 2],
            "concurrencyThresholds": [16],
            "windowSeconds": 30,
            "cooldownSeconds": 60,
        },
    }
)


def _accounted(endpoint: Endpoint) -> None:
    assert endpoint.arrived == len(endpoint.finished) + len(endpoint.rejected) + endpoint.running()
    assert all(r.finish is not None and r.reason is None for r in endpoint.finished)
    assert all(r.reason for r in endpoint.rejected)


def test_every_request_is_finished_rejected_with_a_reason_or_still_running() -> None:
    events = EventQueue()
    limits = Limits(drain_timeout_s=1.0, hold_s=10.0, hold_max=30)
    endpoint = Endpoint(events, PROFILE, limits=limits)
    endpoint.create(0.0, "g0-tp1", GroupShape(1, 1))  # Ready at 35 s
    for i in range(400):  # 4 per second for 100 s
        t = i / 4
        events.schedule(t, lambda now, i=i: endpoint.arrive(now, Request(i, now, 512, 400)))
    events.schedule(60.0, lambda now: endpoint.delete(now, "g0-tp1"))
    events.schedule(60.0, lambda now: endpoint.create(now, "g1-tp2", GroupShape(2, 2)))
    events.run(100.0)
    _accounted(endpoint)
    reasons = {r.reason for r in endpoint.rejected}
    assert reasons == {
        "no replica ready within 10s",
        "gateway hold queue full",
        "aborted at the drain bound",
    }
    assert endpoint.finished
    assert endpoint.running() > 0
    assert endpoint.dark_events  # the group was deleted before its replacement was Ready


@pytest.mark.parametrize(
    "traffic",
    [
        OpenLoop(duration_s=600, peak_rps=40, shape="diurnal", lengths=Lengths("chat", 512, 64)),
        OpenLoop(duration_s=600, peak_rps=8, arrivals="gamma", cv=3.0),
        Sweep(levels=(1, 16, 64, 8), stage_s=60, lengths=Lengths("fixed", 512, 64)),
    ],
    ids=["diurnal-chat", "gamma", "sweep"],
)
def test_strategies_conserve_requests_and_keep_the_invariants(traffic: OpenLoop | Sweep) -> None:
    strategies = [
        Static((GroupShape(8, 8),)),
        Static((GroupShape(8, 1),)),
        ReplicaAutoscaler(tensor_parallel=2, target_in_flight=20, max_gpus=8),
        Scaleserve(ThresholdsControl(SPEC), cluster_gpus=16),
        Scaleserve(_objectives(), cluster_gpus=16, mode="objectives"),
    ]
    for strategy in strategies:
        outcome = simulate(PROFILE, traffic, strategy, seed=7)
        _accounted(outcome.endpoint)
        assert outcome.conserved
        assert outcome.violations == ()
        assert outcome.endpoint.max_gpus <= strategy.gpu_limit
        summary = summarize(outcome, Objectives(ttft_ms=2000, tbt_ms=50))
        assert summary["requests"]["finished"] > 0
        assert summary["zero_ready_after_first_ready"] == 0 or not strategy.ours


def test_thresholds_mode_reshapes_make_before_break_within_budget_plus_surge() -> None:
    traffic = OpenLoop(duration_s=900, peak_rps=60, shape="diurnal")
    strategy = Scaleserve(ThresholdsControl(SPEC), cluster_gpus=16)
    outcome = simulate(PROFILE, traffic, strategy, seed=3)
    layouts = [layout for _, _, _, layout in outcome.endpoint.timeline]
    assert "1x8+4x2" in layouts  # the new group serves beside the old one before it goes
    assert "4x2" in layouts
    assert layouts[-1] == "1x8"
    assert outcome.endpoint.max_gpus == 16
    assert outcome.endpoint.dark_events == []
    summary = summarize(outcome, Objectives(ttft_ms=2000, tbt_ms=50))
    assert summary["reshapes"] == 2
    assert 0 < summary["capacity_lost_share"] < 0.5


def test_the_operator_pass_writes_its_status_and_holds_without_spare_gpus() -> None:
    traffic = OpenLoop(duration_s=900, peak_rps=60, shape="diurnal")
    roomy = Scaleserve(ThresholdsControl(SPEC), cluster_gpus=16)
    simulate(PROFILE, traffic, roomy, seed=3)
    assert roomy.control.status["phase"] == "Ready"
    assert roomy.control.status["targetLayout"] == "1x8"
    assert (
        roomy.control.status["lastReshapeCompletedTime"] >= roomy.control.status["lastReshapeTime"]
    )
    # one node: the new group has nowhere to go beside the old one, so decide holds, and the
    # held target follows the load back down at the end of the day
    tight = Scaleserve(ThresholdsControl(SPEC), cluster_gpus=8)
    outcome = simulate(PROFILE, traffic, tight, seed=3)
    assert {layout for _, _, _, layout in outcome.endpoint.timeline} == {"1x8"}
    assert outcome.endpoint.dark_events == []
    assert tight.control.status["lastReshapeTime"]  # a reshape to 4x2 was chosen, and held
    assert tight.control.status["targetLayout"] == "1x8"
    assert tight.control.status["message"].startswith("at 1x8")
    assert not any(
        c["type"] == "Held" and c["status"] == "True" for c in tight.control.status["conditions"]
    )


def _objectives() -> ObjectivesControl:
    goals = Goals(
        ttft_ms=500, tbt_ms=12, min_gpus=1, max_gpus=8, per_node=8, candidates=(8, 4, 2, 1)
    )
    return ObjectivesControl(goals, PROFILE, window_s=30, cooldown_s=60, surge=8)


def test_objectives_mode_gives_gpus_back_as_load_falls_and_takes_them_as_it_rises() -> None:
    traffic = OpenLoop(duration_s=1800, peak_rps=60, shape="diurnal")
    strategy = Scaleserve(_objectives(), cluster_gpus=16, mode="objectives")
    outcome = simulate(PROFILE, traffic, strategy, seed=5)
    gpus = [g for _, g, _, _ in outcome.endpoint.timeline]
    peak = gpus.index(max(gpus))
    assert gpus[0] < max(gpus)
    assert gpus[-1] < max(gpus)
    assert min(gpus[peak:]) < max(gpus)
    assert outcome.endpoint.max_gpus <= 16
    assert outcome.endpoint.dark_events == []
    assert outcome.violations == ()
    assert outcome.conserved
    static = simulate(PROFILE, traffic, Static((GroupShape(8, 8),)), seed=5)
    assert outcome.endpoint.gpu_seconds < 0.9 * static.endpoint.gpu_seconds


def test_closed_loop_streams_on_one_replica_reproduce_the_profile_points() -> None:
    sweep = Sweep(levels=(1, 8, 64), stage_s=60, lengths=Lengths("fixed", 512, 64))
    outcome = simulate(PROFILE, sweep, Static((GroupShape(1, 1),)), seed=2)
    summary = summarize(outcome, Objectives(ttft_ms=2000, tbt_ms=50), bins=3)
    degree = PROFILE.degree(1)
    assert degree is not None
    for stage, streams in enumerate(sweep.levels):
        # every request of a stage runs beside streams - 1 others (bar the stage's edges)
        tbt = summary["over_time"]["tbt_p50_ms"][stage]
        ttft = summary["over_time"]["ttft_p50_ms"][stage]
        assert tbt == pytest.approx(degree.tbt_ms(streams), rel=0.05)
        assert ttft == pytest.approx(degree.ttft_ms(streams), rel=0.05)


def test_a_trace_arrives_exactly_as_given_on_one_tp1_replica() -> None:
    # a profile with one degree only, as `scaleserve profile` measures on one TP1 engine
    profile = make_profile({1: [(1, 10, 2), (8, 40, 4)]}, input_tokens=100, output_tokens=11)
    trace = Trace(30.0, (0.0, 1.0, 1.0, 5.5), (100, 200, 50, 100), (11, 6, 2, 1))
    outcome = simulate(profile, trace, Static((GroupShape(1, 1),)), seed=3)
    done = sorted(outcome.endpoint.finished, key=lambda r: r.rid)
    assert outcome.conserved
    assert len(done) == 4
    got = [(r.arrival, r.input_tokens, r.output_tokens) for r in done]
    assert got == list(zip(trace.arrivals, trace.input_tokens, trace.output_tokens, strict=True))
    # alone on the replica: TTFT is the first point's, scaled by the prompt; 10 TBTs of 2 ms
    assert done[0].ttft == pytest.approx(0.010)
    assert done[0].tbt == pytest.approx(0.002)
    assert done[3].ttft == pytest.approx(0.010)


def test_a_deleted_group_holds_its_gpus_while_its_pods_terminate() -> None:
    events = EventQueue()
    endpoint = Endpoint(events, PROFILE, limits=Limits(termination_s=7.0))
    endpoint.create(0.0, "g0-tp2", GroupShape(2, 2), warm=True)
    events.schedule(1.0, lambda now: endpoint.arrive(now, Request(0, now, 512, 400)))  # ~2 s
    events.schedule(1.2, lambda now: endpoint.create(now, "g1-tp1", GroupShape(2, 1), warm=True))
    events.schedule(1.5, lambda now: endpoint.delete(now, "g0-tp2"))
    events.schedule(1.5, lambda now: endpoint.shrink(now, "g1-tp1", 1))  # both replicas idle
    events.run(60.0)
    endpoint.take_in_flight_avg(60.0)  # account up to the end
    history = [(t, state) for t, name, state in endpoint.history if name == "g0-tp2"]
    assert [state for _, state in history] == ["ready", "draining", "terminating", "gone"]
    drained, gone = history[2][0], history[3][0]
    assert drained > 1.5  # its one request ran to the end first
    assert gone == pytest.approx(drained + 7.0)
    assert len(endpoint.finished) == 1
    # g0's 2 GPUs until its pods are gone; g1's 2 until its retired replica's pod is gone
    # (idle: drained at once, terminated 7 s later), 1 after
    assert endpoint.groups["g1-tp1"].stopping == []
    expected = 2 * gone + 2 * (8.5 - 1.2) + 1 * (60 - 8.5)
    assert endpoint.gpu_seconds == pytest.approx(expected)
