"""The calibration's comparison: figures computed one way from measured and simulated requests,
relative errors and their summary, on hand-made requests."""

from __future__ import annotations

import math

import pytest

from scaleserve.profiling.load import RequestRecord
from scaleserve.simulate.calibration import (
    figures,
    from_measured,
    from_simulated,
    relative_error,
    relative_errors,
    summary,
)
from scaleserve.simulate.engine import Request

pytestmark = pytest.mark.unit


def _simulated(arrival: float, first: float, finish: float, tokens: int) -> Request:
    request = Request(0, arrival, 100, tokens)
    request.first_token, request.finish = first, finish
    return request


def test_measured_and_simulated_requests_give_the_same_figures_for_the_same_timings() -> None:
    start = 1000.0
    # (sent, first token, last token, tokens) relative to the start
    timings = [(0.0, 0.1, 1.1, 11), (0.0, 0.3, 2.3, 5), (1.0, 1.2, 1.2, 1), (2.0, 2.5, 10.5, 9)]
    measured = [
        RequestRecord(sent=start + s, first=start + f, last=start + last, tokens=n, tbt=[9.9])
        for s, f, last, n in timings
    ]
    measured.append(RequestRecord(sent=start, error="HTTP 500"))  # a failure counts on no side
    simulated = [_simulated(*t) for t in timings]
    window = 5.0  # the last request finishes after it: left out on both sides
    real = figures(from_measured(measured, start), window)
    sim = figures(from_simulated(simulated), window)
    assert real == sim
    assert real["requests"] == 3
    assert real["errors"] == 0
    # TTFTs 100, 300, 200 ms
    assert real["ttft_p50_ms"] == pytest.approx(200.0)
    # each stream's mean gap once per token after its first: 10 x 100 ms, 4 x 500 ms
    assert real["tbt_p50_ms"] == pytest.approx(100.0)
    assert real["tbt_p99_ms"] == pytest.approx(500.0)
    assert real["output_tokens_per_s"] == pytest.approx((11 + 5 + 1) / window)


def test_relative_errors_are_simulated_minus_measured_over_measured() -> None:
    measured = {
        "ttft_p50_ms": 100.0,
        "ttft_p99_ms": 400.0,
        "tbt_p50_ms": 10.0,
        "tbt_p99_ms": 0.0,
        "output_tokens_per_s": 1000.0,
    }
    simulated = {
        "ttft_p50_ms": 125.0,
        "ttft_p99_ms": 200.0,
        "tbt_p50_ms": 10.0,
        "tbt_p99_ms": 3.0,
        "output_tokens_per_s": math.nan,
    }
    assert relative_errors(simulated, measured) == {
        "ttft_p50_ms": 0.25,
        "ttft_p99_ms": -0.5,
        "tbt_p50_ms": 0.0,
        "tbt_p99_ms": None,  # nothing to compare against
        "output_tokens_per_s": None,  # no simulated value
    }
    assert relative_error(90.0, 120.0) == -0.25


def test_the_summary_gives_mean_and_largest_absolute_errors_and_the_count_within_25_percent() -> (
    None
):
    rows = [
        {"ttft_p50_ms": 0.1, "tbt_p50_ms": -0.3, "output_tokens_per_s": None},
        {"ttft_p50_ms": -0.2, "tbt_p50_ms": 0.25, "output_tokens_per_s": None},
    ]
    result = summary(rows)
    assert result["ttft_p50_ms"] == {
        "scenarios": 2,
        "mean_abs_error": 0.15,
        "max_abs_error": 0.2,
        "within_tolerance": 2,
    }
    assert result["tbt_p50_ms"]["mean_abs_error"] == 0.275
    assert result["tbt_p50_ms"]["max_abs_error"] == 0.3
    assert result["tbt_p50_ms"]["within_tolerance"] == 1
    assert result["output_tokens_per_s"] == {
        "scenarios": 0,
        "mean_abs_error": None,
        "max_abs_error": None,
        "within_tolerance": 0,
    }
    assert result["ttft_p99_ms"]["scenarios"] == 0
