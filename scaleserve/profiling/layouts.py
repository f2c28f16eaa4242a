"""Which layout of a GPU budget a profile says is best at each load, and where layouts cross.

A layout is `replicas x TP` using the whole budget (8 GPUs: 8 x TP1, 4 x TP2, 2 x TP4,
1 x TP8). At `load` requests in flight on the endpoint, balanced, each replica runs
load / replicas of them. A request's latency is its TTFT plus (outputTokens - 1) times the
time between tokens at that per-replica load; in a closed loop the endpoint's output tokens/s
is load x outputTokens / latency (Little's law), so at equal load the layout with the lower
request latency also has the higher throughput, and one crossover serves both. A layout whose
replicas' KV cache (`kvCacheTokens`) cannot hold their share of the load is not a candidate at
that load: its requests would queue, which the profile's points do not describe. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleserve.profiles import DegreeProfile, Profile


@dataclass(frozen=True)
class Layout:
    replicas: int
    degree: DegreeProfile

    @property
    def name(self) -> str:
        return f"{self.replicas} x TP{self.degree.tensor_parallel}"

    def most_load(self, tokens_per_request: int) -> int | None:
        """The most requests in flight its KV caches hold (None: the profile does not say)."""
        room = self.degree.kv_cache_tokens
        return None if room is None else self.replicas * (room // tokens_per_request)

    def holds(self, load: float, tokens_per_request: int) -> bool:
        most = self.most_load(tokens_per_request)
        return most is None or load <= most

    def request_latency_ms(self, load: float, output_tokens: int) -> float:
        per_replica = load / self.replicas
        return self.degree.ttft_ms(per_replica) + (output_tokens - 1) * self.degree.tbt_ms(
            per_replica
        )

    def output_tokens_per_s(self, load: float, output_tokens: int) -> float:
        return load * output_tokens * 1000.0 / self.request_latency_ms(load, output_tokens)


def layouts(profile: Profile, gpus: int) -> list[Layout]:
    """Every whole-budget layout of one degree, most replicas first."""
    found = [
        Layout(gpus // d.tensor_parallel, d)
        for d in profile.degrees
        if gpus % d.tensor_parallel == 0
    ]
    return sorted(found, key=lambda layout: -layout.replicas)


def best_by_load(profile: Profile, gpus: int, max_load: int) -> list[tuple[int, str]]:
    """(first load, layout) each time the layout with the lowest request latency changes,
    for loads 1..max_load or until no layout holds the load."""
    osl = profile.workload.output_tokens
    per_request = profile.workload.input_tokens + osl
    ranges: list[tuple[int, str]] = []
    for load in range(1, max_load + 1):
        candidates = [c for c in layouts(profile, gpus) if c.holds(load, per_request)]
        if not candidates:
            break
        best = min(candidates, key=lambda layout: layout.request_latency_ms(load, osl))
        if not ranges or ranges[-1][1] != best.name:
            ranges.append((load, best.name))
    return ranges


def crossover(profile: Profile, first: Layout, second: Layout, max_load: int) -> int | None:
    """The lowest load from which `first` has a lower request latency than `second` at every
    load up to `max_load` or until either cannot hold the load; None when it never does."""
    osl = profile.workload.output_tokens
    per_request = profile.workload.input_tokens + osl
    found = None
    for load in range(1, max_load + 1):
        if not (first.holds(load, per_request) and second.holds(load, per_request)):
            break
        ahead = first.request_latency_ms(load, osl) < second.request_latency_ms(load, osl)
        if ahead and found is None:
            found = load
        elif not ahead:
            found = None
    return found
