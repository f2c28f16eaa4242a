"""The simulated reshape timeline: the sample endpoint's thresholds-mode reshape under a ramp of
closed-loop streams, timed from the load's crossing as the local stack's is measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleserve.dev.stack import sample_endpoint
from scaleserve.operator.spec import parse_spec
from scaleserve.profiles import parse_profile
from scaleserve.simulate.timeline import Ramp, reshape_timeline, with_startups

pytestmark = pytest.mark.unit

PROFILE = Path(__file__).parents[3] / "benchmarks" / "results" / "simulate_calibration.profile.yaml"
INTERVAL_S = 2.0


def test_the_reshape_waits_for_the_cooldown_and_the_old_group_goes_after_the_new_is_ready() -> None:
    spec = parse_spec(sample_endpoint(Path("/models/tiny"))["spec"])  # 1 x TP2 -> 2 x TP1 at 8
    profile = with_startups(parse_profile(PROFILE.read_text()), {1: 40.0, 2: 50.0})
    ramp = Ramp((1, 2, 4, 8, 16, 32, 64), 3.0, before_s=15.0, hold_s=120.0,
                input_tokens=32, output_tokens=64)  # fmt: skip
    result = reshape_timeline(
        profile, spec, ramp, cluster_gpus=4, interval_s=INTERVAL_S, max_seqs=64, termination_s=30
    )
    started, ready, deleted, gone = (
        result["intervals"][k] for k in ("started_s", "new_ready_s", "deleted_s", "old_gone_s")
    )
    crossed = result["crossed_at_s"]
    assert crossed == 15.0 + 3 * 3.0
    # the first layout completed when the ramp began: the cooldown (60 s) outlasts the window
    # (10 s), so the reshape starts at the first pass after the cooldown
    assert spec.autoscaling is not None
    cooldown = spec.autoscaling.cooldown_seconds
    assert cooldown > crossed + spec.autoscaling.window_seconds
    assert cooldown - crossed <= started <= cooldown - crossed + INTERVAL_S
    # the new group is created at that pass and is Ready after its degree's start-up
    assert ready == pytest.approx(started + 40.0, abs=0.01)
    # make-before-break: the old group drains once the new one serves, within the drain bound,
    # is deleted, and its pods terminate (their GPUs held) before it is gone
    assert ready <= deleted <= ready + INTERVAL_S + spec.engine.drain_timeout_seconds
    assert gone == pytest.approx(deleted + 30.0, abs=0.01)
    assert result["layouts"][0] == "1x2"
    assert result["layouts"][-1] == "2x1"
    assert result["violations"] == []
