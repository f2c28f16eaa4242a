"""The latency report of /stats: buckets, quantiles that read back what was recorded, histograms
that add up over workers and gateways, and the gateway's windowed recorder per TP degree."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleserve.gateway.pod_stats import merge_stats
from scaleserve.gateway.stats import LatencyWindow
from scaleserve.latency import (
    BOUNDS_MS,
    GROWTH,
    DegreeLatency,
    bucket,
    count,
    histogram,
    merge,
    parse_report,
    quantile,
)

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.2, 100_000), min_size=1, max_size=200), st.sampled_from([0.5, 0.99]))
def test_a_quantile_is_within_one_bucket_of_the_exact_one(values: list[float], q: float) -> None:
    counts: dict[float, int] = {}
    for v in values:
        counts[bucket(v)] = counts.get(bucket(v), 0) + 1
    h = histogram(counts)
    exact = sorted(values)[max(0, int(q * len(values) + 0.999999) - 1)]
    got = quantile(h, q)
    assert got is not None
    assert exact / GROWTH <= got * (1 + 1e-9)
    assert got <= exact * GROWTH * (1 + 1e-9)


def test_buckets_cover_the_range_and_clamp_above_it() -> None:
    assert bucket(0.0) == BOUNDS_MS[0]
    assert bucket(12.0) >= 12.0 > bucket(12.0) / GROWTH - 1e-9
    assert bucket(1e12) == BOUNDS_MS[-1]
    assert quantile((), 0.5) is None


def test_reports_merge_by_degree_histograms_and_in_flight_add_up() -> None:
    a = DegreeLatency(1, 2.5, ((10.0, 3),), ((1.0, 3),))
    b = DegreeLatency(1, 1.5, ((10.0, 1), (20.0, 2)), ())
    c = DegreeLatency(8, 0.5, ((5.0, 1),), ())
    merged = merge([a, b, c])
    assert [d.tensor_parallel for d in merged] == [8, 1]
    one = merged[1]
    assert one.in_flight_avg == 4.0
    assert one.ttft_ms == ((10.0, 4), (20.0, 2))
    assert parse_report([d.to_json() for d in merged]) == merged
    with pytest.raises(ValueError, match="histogram bucket"):
        parse_report([{"tensor_parallel": 1, "ttft_ms": [[-1, 2]]}])


def test_the_window_reports_per_degree_what_ended_in_it_and_forgets_older_requests() -> None:
    clock = Clock()
    window = LatencyWindow(10.0, clock)
    window.start(1)
    window.start(1)
    window.start(8)
    clock.t += 5
    for _ in range(4):
        window.record(1, 100.0, 10.0)
    window.record(8, 30.0, None)  # one token: no time between tokens
    window.end(8)
    (tp8, tp1) = parse_report(window.report())
    assert (tp8.tensor_parallel, tp1.tensor_parallel) == (8, 1)
    assert tp1.in_flight_avg == pytest.approx(2.0)
    assert count(tp1.ttft_ms) == count(tp1.tbt_ms) == 4
    assert quantile(tp1.tbt_ms, 0.5) == pytest.approx(10.0, rel=GROWTH - 1)
    assert (count(tp8.ttft_ms), count(tp8.tbt_ms)) == (1, 0)
    clock.t += 30
    (tp1,) = parse_report(window.report())  # TP8: nothing in flight, nothing ended
    assert tp1.in_flight_avg == pytest.approx(2.0)
    assert count(tp1.ttft_ms) == 0


def _worker(latency: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "in_flight": 1,
        "in_flight_avg": 1.0,
        "queued": 0,
        "held": 0,
        "requests_total": 5,
        "replicas": [],
        "latency": latency,
    }


def test_a_pods_latency_is_the_sum_of_its_workers_histograms() -> None:
    a = DegreeLatency(2, 1.0, ((10.0, 2),), ((1.0, 2),)).to_json()
    b = DegreeLatency(2, 3.0, ((10.0, 1), (40.0, 1)), ((2.0, 2),)).to_json()
    pod = merge_stats([_worker([a]), _worker([b]), _worker([])], 30.0)
    (tp2,) = parse_report(pod["latency"])
    assert tp2.in_flight_avg == 4.0
    assert tp2.ttft_ms == ((10.0, 3), (40.0, 1))
    assert count(tp2.tbt_ms) == 4
