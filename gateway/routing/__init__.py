"""Routing policies: pure functions ``choose(snapshot, request) -> replica | None``.

One policy per module, all with the same signature over an immutable `Snapshot`; the gateway
picks one by name from configuration. Nothing here does I/O or keeps state between calls
(caches of derived, immutable tables aside).
"""

from __future__ import annotations

from scaleserve.gateway.routing import least_in_flight, prefix_affinity, round_robin
from scaleserve.gateway.routing.types import Policy, ReplicaState, RouteRequest, Snapshot

POLICIES: dict[str, Policy] = {
    "round-robin": round_robin.choose,
    "least-in-flight": least_in_flight.choose,
    "prefix-affinity": prefix_affinity.choose,
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown routing policy {name!r} (known: {known})") from None


__all__ = ["POLICIES", "Policy", "ReplicaState", "RouteRequest", "Snapshot", "get_policy"]
