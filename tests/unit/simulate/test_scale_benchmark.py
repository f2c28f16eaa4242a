"""The scale benchmark's driver, on a few endpoints for a few simulated hours."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import simulate_scale
from scaleserve.profiles import dump_profile
from tests.fixtures.profiles import tp1_tp8_profile

pytestmark = pytest.mark.unit

PROFILE = dump_profile(tp1_tp8_profile({1: 60, 8: 90}))


@pytest.mark.parametrize("strategy", ["thresholds", "objectives"])
def test_endpoints_on_a_shared_cluster_keep_every_invariant(tmp_path: Path, strategy: str) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    out = tmp_path / "scale.json"
    args = argparse.Namespace(
        profile=str(profile),
        endpoints=6,
        gpus=56,  # room for every endpoint's 8 and one reshape's surge at a time
        hours=24.0,
        interval=30.0,
        peak_rps=150.0,
        strategy=strategy,
        ttft_ms=1000.0,
        tbt_ms=15.0,
        seed=1,
        out=str(out),
    )
    result = simulate_scale.run(args)
    assert json.loads(out.read_text()) == result
    assert result["reshapes"] > 0
    invariants = result["invariants"]
    assert invariants["endpoint_over_budget_plus_surge_passes"] == 0
    assert not invariants["cluster_over_capacity"]
    assert invariants["zero_ready_passes_after_first_ready"] == 0
    assert result["decide_us"]["p50"] > 0
    assert 0 < result["decide_cpu_us"]["p50"] <= result["decide_cpu_us"]["p99"]
