"""Best layouts and crossovers read from a profile: on hand-made curves, and on the committed
reference profiles (whose crossovers docs/profiles.md quotes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleserve.profiles import parse_profile
from scaleserve.profiling.layouts import best_by_load, crossover, layouts
from tests.fixtures.profiles import make_profile

pytestmark = pytest.mark.unit

REFERENCES = Path(__file__).resolve().parents[3] / "profiles"

# TP1: slow tokens that barely grow with load; TP2: fast tokens that grow quickly.
PROFILE = make_profile(
    {1: [(1, 10, 10), (11, 10, 20)], 2: [(1, 10, 5), (11, 10, 26)]},
    input_tokens=90,
    startup_s=1,
    kv_cache_tokens={1: 1000},
)


def test_layouts_fill_the_budget_with_each_degree_that_divides_it() -> None:
    assert [layout.name for layout in layouts(PROFILE, 2)] == ["2 x TP1", "1 x TP2"]
    assert [layout.name for layout in layouts(PROFILE, 3)] == ["3 x TP1"]


def test_request_latency_and_throughput_follow_the_per_replica_load() -> None:
    two_tp1, one_tp2 = layouts(PROFILE, 2)
    # 2 x TP1 at 4 in flight: 2 per replica, TBT 11 ms; 10 + 10 x 11 = 120 ms
    assert two_tp1.request_latency_ms(4, 11) == pytest.approx(120)
    assert two_tp1.output_tokens_per_s(4, 11) == pytest.approx(4 * 11 * 1000 / 120)
    # 1 x TP2 at 4: TBT 5 + 3 x 2.1 = 11.3 ms; at 3: 9.2 ms against 2 x TP1's 10.5
    assert one_tp2.request_latency_ms(4, 11) == pytest.approx(123)
    assert one_tp2.request_latency_ms(3, 11) < two_tp1.request_latency_ms(3, 11)


def test_the_best_layout_changes_where_the_curves_cross_and_stops_at_the_kv_cache() -> None:
    profile = PROFILE
    two_tp1, one_tp2 = layouts(profile, 2)
    assert best_by_load(profile, 2, 18) == [(1, "1 x TP2"), (4, "2 x TP1")]
    assert crossover(profile, two_tp1, one_tp2, 30) == 4
    assert crossover(profile, one_tp2, two_tp1, 30) is None
    # 2 x TP1 holds 2 x (1000 // 101) = 18 requests: beyond that only 1 x TP2 remains
    assert two_tp1.most_load(101) == 18
    assert best_by_load(profile, 2, 40)[-1] == (19, "1 x TP2")


@pytest.mark.parametrize(
    ("gpu", "low", "high"),
    [("h200_sxm", 140, 165), ("h100_sxm", 178, 205)],  # the estimator's own: ~152 and ~192
)
def test_reference_8b_profiles_put_8_x_tp1_ahead_of_1_x_tp8_where_the_estimator_does(
    gpu: str, low: int, high: int
) -> None:
    profile = parse_profile((REFERENCES / f"llama-3.1-8b.{gpu}.yaml").read_text())
    candidates = {layout.name: layout for layout in layouts(profile, 8)}
    at = crossover(profile, candidates["8 x TP1"], candidates["1 x TP8"], 2048)
    assert at is not None
    assert low <= at <= high
    order = [name for _, name in best_by_load(profile, 8, 2048)]
    assert order == ["1 x TP8", "2 x TP4", "4 x TP2", "8 x TP1"]


def test_every_reference_profile_parses_and_says_where_it_came_from() -> None:
    files = sorted(REFERENCES.glob("llama-3.1-*.yaml"))
    assert len(files) == 6  # 8B, 70B and 70B in FP8 on H100 and H200
    for path in files:
        profile = parse_profile(path.read_text())
        assert profile.provenance.source == "estimate", path
        assert profile.provenance.tool == "aiconfigurator 0.12.0", path
        assert profile.workload.input_tokens == 1024
        assert profile.workload.output_tokens == 256
        assert all(d.kv_cache_tokens for d in profile.degrees), path
