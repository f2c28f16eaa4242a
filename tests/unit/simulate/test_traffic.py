"""Traffic shapes: rates, arrival counts, burstiness and length mixes."""

from __future__ import annotations

import numpy as np
import pytest

from scaleserve.simulate.traffic import Burst, Lengths, OpenLoop, Sweep, Trace

pytestmark = pytest.mark.unit


def test_poisson_arrivals_at_a_constant_rate_have_the_expected_count() -> None:
    times, inputs, outputs = OpenLoop(duration_s=1000, peak_rps=20).generate(
        np.random.default_rng(1)
    )
    assert abs(len(times) - 20_000) < 5 * np.sqrt(20_000)
    assert np.all(np.diff(times) >= 0)
    assert times[-1] < 1000
    assert set(inputs) == {1024}
    assert set(outputs) == {256}


def test_a_diurnal_day_peaks_mid_run_at_peak_to_trough_times_its_start() -> None:
    traffic = OpenLoop(duration_s=86_400, peak_rps=30, shape="diurnal", peak_to_trough=30)
    rate = traffic.rate(np.array([0.0, 43_200.0, 86_400.0]))
    assert rate == pytest.approx([1.0, 30.0, 1.0])
    times, *_ = traffic.generate(np.random.default_rng(2))
    first_hour = np.sum(times < 3600)
    middle_hour = np.sum((times >= 41_400) & (times < 45_000))
    assert middle_hour > 20 * first_hour


def test_gamma_arrivals_are_burstier_than_poisson_at_the_same_mean() -> None:
    def cv(arrivals: str) -> float:
        traffic = OpenLoop(duration_s=2000, peak_rps=10, arrivals=arrivals, cv=3.0)  # type: ignore[arg-type]
        gaps = np.diff(traffic.generate(np.random.default_rng(3))[0])
        return float(gaps.std() / gaps.mean())

    assert cv("poisson") == pytest.approx(1.0, abs=0.1)
    assert cv("gamma") == pytest.approx(3.0, abs=0.6)


def test_a_burst_multiplies_the_rate_while_it_lasts() -> None:
    traffic = OpenLoop(duration_s=100, peak_rps=10, bursts=(Burst(40, 10, 5.0),))
    assert list(traffic.rate(np.array([39.0, 40.0, 49.9, 50.0]))) == [10, 50, 50, 10]


def test_the_chat_mix_has_the_given_means_and_a_heavy_tail() -> None:
    inputs, outputs = Lengths("chat", 1000, 200).sample(np.random.default_rng(4), 50_000)
    assert inputs.mean() == pytest.approx(1000, rel=0.1)
    assert outputs.mean() == pytest.approx(200, rel=0.1)
    assert np.percentile(inputs, 99) > 5 * np.median(inputs)


def test_the_sweep_steps_through_its_stream_counts() -> None:
    sweep = Sweep(levels=(1, 8, 64), stage_s=10)
    assert sweep.duration_s == 30
    assert [sweep.streams_at(t) for t in (0, 9.9, 10, 25, 30)] == [1, 1, 8, 64, 64]


def test_a_sweep_with_given_lengths_hands_them_out_in_sending_order_cycled() -> None:
    sweep = Sweep(levels=(2,), stage_s=10, given=((10, 3), (20, 4), (30, 5)))
    rng = np.random.default_rng(0)
    assert [sweep.request_lengths(i, rng) for i in range(4)] == [(10, 3), (20, 4), (30, 5), (10, 3)]


def test_a_trace_is_replayed_as_given_and_refuses_inconsistent_input() -> None:
    trace = Trace(5.0, (0.5, 0.5, 2.0), (10, 20, 30), (1, 2, 3))
    times, inputs, outputs = trace.generate(np.random.default_rng(0))
    assert list(times) == [0.5, 0.5, 2.0]
    assert list(inputs) == [10, 20, 30]
    assert list(outputs) == [1, 2, 3]
    with pytest.raises(ValueError, match="one input and one output"):
        Trace(5.0, (0.5,), (10, 20), (1,))
    with pytest.raises(ValueError, match="ascending"):
        Trace(5.0, (2.0, 1.0), (10, 20), (1, 2))
