"""Latency as the gateways report it on /stats (docs/contracts.md, `latency`): per
tensor-parallel degree, over the gateway's stats window, the requests in flight on replicas
of that degree (time-weighted) and histograms of time to first token and of each request's
mean time between tokens.

Histograms rather than quantiles, because they add up: a pod's workers and an endpoint's
gateways each saw part of the requests, and the sum of their histograms is the histogram of
all of them, which no sum of quantiles is. Buckets are fixed for every component (BOUNDS_MS,
about 19 % wide) and sent sparse as [upper bound, count] pairs, so an empty bucket costs
nothing. Pure: shared by the gateway (which writes it) and the operator (which reads it).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROWTH = 2**0.25
# upper bounds of the buckets, ms: 0.1 ms to 419 s; slower values count in the last
BOUNDS_MS: tuple[float, ...] = tuple(round(0.1 * GROWTH**k, 4) for k in range(89))

Histogram = tuple[tuple[float, int], ...]  # (upper bound ms, count), ascending, counts > 0


def bucket(ms: float) -> float:
    """The upper bound of the bucket `ms` falls in."""
    return BOUNDS_MS[min(bisect.bisect_left(BOUNDS_MS, ms), len(BOUNDS_MS) - 1)]


def histogram(counts: Mapping[float, int]) -> Histogram:
    return tuple(sorted((le, n) for le, n in counts.items() if n > 0))


def merge_histograms(parts: Iterable[Histogram]) -> Histogram:
    total: Counter[float] = Counter()
    for part in parts:
        for le, n in part:
            total[le] += n
    return histogram(total)


def count(h: Histogram) -> int:
    return sum(n for _, n in h)


def quantile(h: Histogram, q: float) -> float | None:
    """The q-quantile, interpolated linearly inside its bucket (as Prometheus'
    histogram_quantile does); None for an empty histogram."""
    total = count(h)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for le, n in h:
        if seen + n >= rank:
            i = bisect.bisect_left(BOUNDS_MS, le)
            lower = BOUNDS_MS[i - 1] if 0 < i <= len(BOUNDS_MS) else 0.0
            lower = min(lower, le)
            return lower + (le - lower) * max(0.0, rank - seen) / n
        seen += n
    return h[-1][0]


@dataclass(frozen=True)
class DegreeLatency:
    """What the gateways saw of the replicas of one tensor-parallel degree over a window."""

    tensor_parallel: int
    in_flight_avg: float  # requests in flight on all its replicas, time-weighted mean
    ttft_ms: Histogram = ()  # time to first token of requests that ended in the window
    tbt_ms: Histogram = ()  # each one's mean time between tokens (two tokens or more)

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor_parallel": self.tensor_parallel,
            "in_flight_avg": round(self.in_flight_avg, 4),
            "ttft_ms": [list(p) for p in self.ttft_ms],
            "tbt_ms": [list(p) for p in self.tbt_ms],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DegreeLatency:
        """Raises ValueError (or TypeError, KeyError) on a malformed entry."""
        tp = int(data["tensor_parallel"])
        avg = float(data.get("in_flight_avg", 0.0))
        if tp < 1 or not math.isfinite(avg) or avg < 0:
            raise ValueError(f"latency entry {data!r}")
        return cls(tp, avg, _parse(data.get("ttft_ms")), _parse(data.get("tbt_ms")))


def _parse(pairs: Any) -> Histogram:
    counts: Counter[float] = Counter()
    for raw_le, raw_n in pairs or ():
        le, n = float(raw_le), int(raw_n)
        if not math.isfinite(le) or le <= 0 or n < 0:
            raise ValueError(f"histogram bucket {[le, n]!r}")
        counts[le] += n
    return histogram(counts)


def merge(parts: Iterable[DegreeLatency]) -> tuple[DegreeLatency, ...]:
    """Several reports (workers of a pod, gateways of an endpoint) as one: in-flight means and
    histograms add up per degree. Highest degree first."""
    by_tp: dict[int, list[DegreeLatency]] = {}
    for part in parts:
        by_tp.setdefault(part.tensor_parallel, []).append(part)
    return tuple(
        DegreeLatency(
            tp,
            sum(p.in_flight_avg for p in same),
            merge_histograms(p.ttft_ms for p in same),
            merge_histograms(p.tbt_ms for p in same),
        )
        for tp, same in sorted(by_tp.items(), reverse=True)
    )


def parse_report(entries: Any) -> tuple[DegreeLatency, ...]:
    """A /stats `latency` list (absent: nothing measured); ValueError when malformed."""
    if entries is None:
        return ()
    if not isinstance(entries, Sequence):
        raise ValueError("latency must be a list")
    return merge(DegreeLatency.from_json(e) for e in entries)


@dataclass(frozen=True)
class Measured:
    """The gateways' latency report of one pass: per degree, over their stats window."""

    window_s: float
    degrees: tuple[DegreeLatency, ...] = ()

    def degree(self, tensor_parallel: int) -> DegreeLatency | None:
        return next((d for d in self.degrees if d.tensor_parallel == tensor_parallel), None)
