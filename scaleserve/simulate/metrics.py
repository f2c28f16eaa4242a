"""Figures from a run: latency percentiles overall and over time, goodput, throughput,
GPU-hours and what reshaping cost.

"Trough" and "peak" are the 1/24 of the run around its start/end and around its middle: the
quietest and busiest hour of a diurnal day squeezed into the run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaleserve.simulate.run import Outcome


@dataclass(frozen=True)
class Objectives:
    ttft_ms: float
    tbt_ms: float


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def _arrays(outcome: Outcome) -> dict[str, np.ndarray]:
    done = outcome.endpoint.finished
    return {
        "arrival": np.array([r.arrival for r in done]),
        "finish": np.array([r.finish for r in done]),
        "ttft": np.array([r.ttft for r in done]),
        "tbt": np.array([r.tbt for r in done]),
        "decodes": np.array([r.output_tokens > 1 for r in done], dtype=bool),
        "tokens": np.array([r.output_tokens for r in done]),
    }


def summarize(outcome: Outcome, objectives: Objectives, bins: int = 48) -> dict[str, Any]:
    e, d = outcome.endpoint, outcome.duration_s
    a = _arrays(outcome)
    tbt = a["tbt"][a["decodes"]]
    good = (a["ttft"] * 1000 <= objectives.ttft_ms) & (
        ~a["decodes"] | (a["tbt"] * 1000 <= objectives.tbt_ms)
    )
    edge = d / 48
    trough = a["decodes"] & ((a["arrival"] < edge) | (a["arrival"] >= d - edge))
    peak = (a["finish"] >= d / 2 - edge) & (a["finish"] < d / 2 + edge)
    gpu_hours = e.gpu_seconds / 3600
    return {
        "strategy": outcome.strategy.name,
        "requests": {
            "arrived": e.arrived,
            "finished": len(e.finished),
            "rejected": dict(Counter(r.reason or "" for r in e.rejected)),
            "running_at_end": e.running(),
        },
        "ttft_ms": {"p50": _pct(a["ttft"], 50), "p99": _pct(a["ttft"], 99)},
        "tbt_ms": {"p50": _pct(tbt, 50), "p99": _pct(tbt, 99)},
        "goodput": {
            "share": round(float(good.sum()) / e.arrived, 4) if e.arrived else None,
            "requests_per_s": round(float(good.sum()) / d, 3),
        },
        "output_tokens_per_s": round(float(a["tokens"].sum()) / d, 1),
        "trough_tbt_p50_ms": _pct(a["tbt"][trough], 50),
        "peak_output_tokens_per_s": round(float(a["tokens"][peak].sum()) / (2 * edge), 1),
        "gpu_hours": round(gpu_hours, 3),
        "max_gpus": e.max_gpus,
        "reshapes": outcome.strategy.reshapes,
        "capacity_lost_gpu_hours": round(e.idle_gpu_seconds / 3600, 3),
        "capacity_lost_share": round(e.idle_gpu_seconds / e.gpu_seconds, 4) if e.gpu_seconds else 0,
        "zero_ready_after_first_ready": len(e.dark_events),
        "conserved": outcome.conserved,
        "violations": list(outcome.violations),
        "over_time": _over_time(outcome, a, bins),
    }


def _over_time(outcome: Outcome, a: dict[str, np.ndarray], bins: int) -> dict[str, list[Any]]:
    d = outcome.duration_s
    edges = np.linspace(0.0, d, bins + 1)
    which = np.clip(np.searchsorted(edges, a["arrival"], side="right") - 1, 0, bins - 1)
    done_in = np.clip(np.searchsorted(edges, a["finish"], side="right") - 1, 0, bins - 1)
    series: dict[str, list[Any]] = {k: [] for k in ("t_s", "ttft_p50_ms", "ttft_p99_ms")}
    series.update({k: [] for k in ("tbt_p50_ms", "tbt_p99_ms", "output_tokens_per_s", "gpus")})
    gpus = _gpus_per_bin(outcome, edges)
    for i in range(bins):
        here = which == i
        series["t_s"].append(round(float(edges[i]), 1))
        series["ttft_p50_ms"].append(_pct(a["ttft"][here], 50))
        series["ttft_p99_ms"].append(_pct(a["ttft"][here], 99))
        decoding = a["tbt"][here & a["decodes"]]
        series["tbt_p50_ms"].append(_pct(decoding, 50))
        series["tbt_p99_ms"].append(_pct(decoding, 99))
        tokens = a["tokens"][done_in == i].sum()
        series["output_tokens_per_s"].append(round(float(tokens) / (edges[1] - edges[0]), 1))
        series["gpus"].append(round(gpus[i], 2))
    return series


def _gpus_per_bin(outcome: Outcome, edges: np.ndarray) -> list[float]:
    """Time-averaged GPUs held per bin, from the endpoint's step-function timeline."""
    line = outcome.endpoint.timeline
    times = np.array([t for t, *_ in line] + [outcome.duration_s])
    held = np.array([g for _, g, *_ in line], dtype=float)
    out = []
    for lo, hi in itertools.pairwise(edges):
        starts, ends = np.clip(times[:-1], lo, hi), np.clip(times[1:], lo, hi)
        out.append(float(((ends - starts) * held).sum() / (hi - lo)))
    return out
