"""The data every routing policy sees: an immutable snapshot and the request's routing keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica eligible for new work, as a policy sees it.

    key: the replica's address (stable identity). weight: its capacity, the tensor-parallel
    degree (>= 1). in_flight: requests it is serving through this gateway now.
    """

    key: str
    weight: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Replicas that may take new work now (healthy, serving, not terminating), in stable order."""

    replicas: tuple[ReplicaState, ...]


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy may use about the request.

    seq: a per-gateway sequence number (round-robin position). rand: a uniformly random
    64-bit integer drawn per request (randomised policies stay pure and reproducible).
    prompt_token_ids: the tokenized prompt (prefix affinity hashes its leading blocks).
    """

    seq: int
    rand: int
    prompt_token_ids: Sequence[int] = ()


Policy = Callable[[Snapshot, RouteRequest], "ReplicaState | None"]
