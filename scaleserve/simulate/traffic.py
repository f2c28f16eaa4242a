"""Traffic: open-loop arrivals (Poisson or gamma, constant, diurnal, bursts) and closed-loop
streams (the ScaleLLM sweep), with request lengths fixed or drawn from a chat-like mix; or a
given trace (a measured run's arrivals and lengths, replayed exactly).

Open-loop arrivals follow a rate curve: a renewal process of mean-1 gaps (exponential, or
gamma with a given coefficient of variation) in operational time, mapped back through the
cumulative rate (time rescaling), so burstiness and the daily shape compose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Lengths:
    """Request lengths: `fixed` (every request input x output tokens) or `chat`, a heavy-tailed
    mix with those means (log-normal; sigma 1.0 for prompts, 0.8 for outputs, clipped)."""

    kind: Literal["fixed", "chat"] = "fixed"
    input_tokens: int = 1024
    output_tokens: int = 256

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "fixed":
            return np.full(n, self.input_tokens), np.full(n, self.output_tokens)
        return (
            _lognormal(rng, n, self.input_tokens, 1.0, 8, 16 * self.input_tokens),
            _lognormal(rng, n, self.output_tokens, 0.8, 1, 8 * self.output_tokens),
        )


def _lognormal(
    rng: np.random.Generator, n: int, mean: float, sigma: float, lo: int, hi: int
) -> np.ndarray:
    mu = math.log(mean) - sigma * sigma / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), lo, hi).astype(np.int64)


@dataclass(frozen=True)
class Burst:
    start_s: float
    duration_s: float
    factor: float  # the rate is multiplied by this while the burst lasts


@dataclass(frozen=True)
class OpenLoop:
    """Arrivals at `peak_rps` (constant) or along a day squeezed into `duration_s`: the rate
    rises from peak/peak_to_trough at the start to the peak at mid-run and back."""

    duration_s: float
    peak_rps: float
    shape: Literal["constant", "diurnal"] = "constant"
    peak_to_trough: float = 30.0
    arrivals: Literal["poisson", "gamma"] = "poisson"
    cv: float = 2.0  # coefficient of variation of the gaps, for gamma arrivals
    bursts: tuple[Burst, ...] = ()
    lengths: Lengths = Lengths()

    def rate(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if self.shape == "constant":
            rate = np.full_like(t, self.peak_rps)
        else:
            trough = self.peak_rps / self.peak_to_trough
            phase = (1 - np.cos(2 * np.pi * t / self.duration_s)) / 2
            rate = trough + (self.peak_rps - trough) * phase
        for b in self.bursts:
            rate = np.where(
                (t >= b.start_s) & (t < b.start_s + b.duration_s), rate * b.factor, rate
            )
        return rate

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arrival times (ascending) and each request's input and output tokens."""
        grid = np.linspace(0.0, self.duration_s, max(int(self.duration_s) * 4, 2) + 1)
        rate = self.rate(grid)
        cumulative = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * np.diff(grid))])
        total = cumulative[-1]
        n = int(total + 6 * math.sqrt(total) * max(self.cv, 1.0) + 16)
        if self.arrivals == "poisson":
            gaps = rng.exponential(1.0, n)
        else:
            shape = 1.0 / (self.cv * self.cv)
            gaps = rng.gamma(shape, 1.0 / shape, n)
        ops = np.cumsum(gaps)
        ops = ops[ops < total]
        times = np.interp(ops, cumulative, grid)
        inputs, outputs = self.lengths.sample(rng, len(times))
        return times, inputs, outputs


@dataclass(frozen=True)
class Sweep:
    """Closed-loop streams: each stream sends its next request when the last one ends; the
    number of streams steps through `levels`, `stage_s` each (ScaleLLM: 1 to 256)."""

    levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    stage_s: float = 120.0
    lengths: Lengths = Lengths()
    # (input, output) tokens of the requests in the order they are sent, over all streams
    # (cycled): a measured run's lengths, so the same mix is replayed. Empty: drawn from lengths
    given: tuple[tuple[int, int], ...] = ()

    @property
    def duration_s(self) -> float:
        return self.stage_s * len(self.levels)

    def streams_at(self, t: float) -> int:
        stage = min(int(t // self.stage_s), len(self.levels) - 1)
        return self.levels[stage]

    def request_lengths(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        """Input and output tokens of the `index`-th request sent."""
        if self.given:
            return self.given[index % len(self.given)]
        inputs, outputs = self.lengths.sample(rng, 1)
        return int(inputs[0]), int(outputs[0])


@dataclass(frozen=True)
class Trace:
    """Given open-loop arrivals, replayed as they are: each request's arrival (seconds from
    the start, ascending) with its input and output tokens, e.g. what a measured run sent."""

    duration_s: float
    arrivals: tuple[float, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.arrivals) == len(self.input_tokens) == len(self.output_tokens):
            raise ValueError("a trace needs one input and one output length per arrival")
        if any(b < a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)):
            raise ValueError("a trace's arrivals must be ascending")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same as `OpenLoop.generate` returns; `rng` is not used."""
        return (
            np.array(self.arrivals, dtype=float),
            np.array(self.input_tokens, dtype=np.int64),
            np.array(self.output_tokens, dtype=np.int64),
        )


Traffic = OpenLoop | Sweep | Trace
