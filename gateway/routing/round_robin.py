"""Weighted round-robin: replica i gets weight_i of every sum(weights) requests, interleaved."""

from __future__ import annotations

from functools import lru_cache, reduce
from math import gcd

from scaleserve.gateway.routing.types import ReplicaState, RouteRequest, Snapshot


@lru_cache(maxsize=64)
def schedule(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One period of smooth weighted round-robin (nginx's algorithm) as replica indexes."""
    divisor = reduce(gcd, weights)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    order: list[int] = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(current)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return tuple(order)


def choose(snapshot: Snapshot, request: RouteRequest) -> ReplicaState | None:
    replicas = snapshot.replicas
    if not replicas:
        return None
    if len(replicas) == 1:
        return replicas[0]
    order = schedule(tuple(r.weight for r in replicas))
    return replicas[order[request.seq % len(order)]]
