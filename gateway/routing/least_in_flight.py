"""Least in-flight by the power of two choices, load measured per unit of capacity.

Two distinct replicas are drawn uniformly (from the request's random key); the one with the
lower (in_flight + 1) / weight wins, ties going to the larger replica. With two replicas this is
an exact comparison. A TP8 replica therefore carries about eight times a TP1 replica's load.
"""

from __future__ import annotations

from scaleserve.gateway.routing.types import ReplicaState, RouteRequest, Snapshot


def _load_key(r: ReplicaState) -> tuple[float, int]:
    return ((r.in_flight + 1) / r.weight, -r.weight)


def choose(snapshot: Snapshot, request: RouteRequest) -> ReplicaState | None:
    replicas = snapshot.replicas
    n = len(replicas)
    if n == 0:
        return None
    if n == 1:
        return replicas[0]
    i = request.rand % n
    j = (request.rand // n) % (n - 1)
    if j >= i:
        j += 1
    a, b = replicas[i], replicas[j]
    return b if _load_key(b) < _load_key(a) else a
