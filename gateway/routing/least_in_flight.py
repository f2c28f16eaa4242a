"""Least in-flight by the power of two choices, weighted by capacity.

Two distinct candidates are drawn with probability proportional to their weight (from the
request's random key); the one with the lower load per unit of capacity, (in_flight + 1) /
weight, wins, ties going to the larger replica. With two replicas this is an exact comparison.
In steady state a TP8 replica carries about eight times a TP1 replica's load.
"""

from __future__ import annotations

from scaleserve.gateway.routing.types import ReplicaState, RouteRequest, Snapshot


def _load_key(r: ReplicaState) -> tuple[float, int]:
    return ((r.in_flight + 1) / r.weight, -r.weight)


def _pick(replicas: tuple[ReplicaState, ...], point: int, skip: int) -> int:
    """Index whose cumulative-weight interval holds `point`, leaving out index `skip`."""
    for i, r in enumerate(replicas):
        if i == skip:
            continue
        if point < r.weight:
            return i
        point -= r.weight
    return len(replicas) - 1 if skip != len(replicas) - 1 else len(replicas) - 2


def choose(snapshot: Snapshot, request: RouteRequest) -> ReplicaState | None:
    replicas = snapshot.replicas
    n = len(replicas)
    if n == 0:
        return None
    if n == 1:
        return replicas[0]
    if n == 2:
        a, b = replicas
    else:
        total = sum(r.weight for r in replicas)
        i = _pick(replicas, request.rand % total, -1)
        j = _pick(replicas, (request.rand >> 32) % (total - replicas[i].weight), i)
        a, b = replicas[i], replicas[j]
    return b if _load_key(b) < _load_key(a) else a
