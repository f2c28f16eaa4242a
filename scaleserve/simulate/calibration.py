"""Calibration: the simulator's figures for a traffic against the same traffic measured on a
real engine, each figure computed one way for both.

Both sides are reduced to per-request timings relative to the scenario's start (sent, first
token, last token, output tokens) and summarised by `scaleserve.profiling.load.summarize`, the
profile sweep's own definitions: TTFT p50/p99 over requests, TBT p50/p99 over tokens of each
stream's mean time between tokens, output tokens/s. Only requests that finished within the
scenario's window count, on both sides (a simulation stops at the window's end, a measured
closed loop lets its last requests finish after it), and tokens/s is their tokens over the
window. A relative error is (simulated - measured) / measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scaleserve.operator.layout import GroupShape
from scaleserve.profiles import Profile
from scaleserve.profiling.load import RequestRecord, summarize
from scaleserve.simulate.endpoint import Limits
from scaleserve.simulate.engine import Request
from scaleserve.simulate.run import simulate
from scaleserve.simulate.strategies import Static
from scaleserve.simulate.traffic import Lengths, Sweep

FIGURES = ("ttft_p50_ms", "ttft_p99_ms", "tbt_p50_ms", "tbt_p99_ms", "output_tokens_per_s")
TOLERANCE = 0.25  # the simulator's calibration target: within 25% of the measurement


def timed(sent: float, first: float, last: float, tokens: int) -> RequestRecord:
    """A finished request as the frame-timed client records it (its mean time between tokens
    once per token after the first; one token per message, a figure not compared)."""
    gaps = [(last - first) / (tokens - 1)] * (tokens - 1) if tokens > 1 else []
    return RequestRecord(
        sent=sent, first=first, last=last, tokens=tokens, messages=tokens, tbt=gaps
    )


def from_measured(records: Iterable[RequestRecord], start: float) -> list[RequestRecord]:
    """Measured requests that succeeded, their times made relative to `start`."""
    return [
        timed(r.sent - start, r.first - start, r.last - start, r.tokens)
        for r in records
        if not r.error and r.first is not None and r.last is not None
    ]


def from_simulated(requests: Iterable[Request]) -> list[RequestRecord]:
    """Finished simulated requests (their times already relative to the run's start)."""
    return [
        timed(r.arrival, r.first_token, r.finish, r.output_tokens)
        for r in requests
        if r.first_token is not None and r.finish is not None
    ]


def figures(records: Sequence[RequestRecord], window_s: float) -> dict[str, Any]:
    """`summarize`'s figures over the requests that finished within the window."""
    done = [r for r in records if r.last is not None and r.last <= window_s]
    return summarize(done, window_s)


def closed_loop(profile: Profile, streams: int, window_s: float, max_seqs: int) -> dict[str, Any]:
    """The figures of `streams` closed-loop streams with the profile's workload lengths on one
    TP1 replica of the fine engine model, as a measured closed loop of that many is compared."""
    w = profile.workload
    traffic = Sweep(
        levels=(streams,),
        stage_s=window_s,
        lengths=Lengths("fixed", w.input_tokens, w.output_tokens),
    )
    outcome = simulate(profile, traffic, Static((GroupShape(1, 1),)), limits=Limits(max_seqs))
    return figures(from_simulated(outcome.endpoint.finished), window_s)


def relative_error(simulated: float | None, measured: float | None) -> float | None:
    """(simulated - measured) / measured; None where the measurement is 0 or either side has
    no value (NaN: no request finished in the window)."""
    if simulated is None or measured is None or measured == 0:
        return None
    if not (math.isfinite(simulated) and math.isfinite(measured)):
        return None
    return round((simulated - measured) / measured, 4)


def relative_errors(
    simulated: Mapping[str, float], measured: Mapping[str, float]
) -> dict[str, float | None]:
    """`relative_error` per figure."""
    return {key: relative_error(simulated.get(key), measured.get(key)) for key in FIGURES}


def summary(rows: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Per figure over the scenarios' errors: mean and largest absolute error, and how many
    scenarios are within TOLERANCE."""
    out: dict[str, dict[str, Any]] = {}
    for key in FIGURES:
        values = [abs(e) for row in rows if (e := row.get(key)) is not None]
        out[key] = {
            "scenarios": len(values),
            "mean_abs_error": round(sum(values) / len(values), 4) if values else None,
            "max_abs_error": round(max(values), 4) if values else None,
            "within_tolerance": sum(v <= TOLERANCE for v in values),
        }
    return out
