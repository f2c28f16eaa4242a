"""Prefix affinity: consistent hashing of the prompt's leading token blocks, with bounded load.

Requests whose prompts share their first blocks (a system prompt, a few-shot preamble, an
ongoing conversation) land on the same replica, whose prefix cache is warm. Each replica owns
VNODES_PER_WEIGHT * weight points on a hash ring, so keys spread in proportion to capacity.
Bounded load (Mirrokni, Thorup and Zadimoghaddam): a replica may take the request only while
its in-flight count stays within LOAD_FACTOR times its capacity share of the total; otherwise
the walk continues clockwise to the next replica that has room.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from hashlib import blake2b

from scaleserve.gateway.routing.types import ReplicaState, RouteRequest, Snapshot

BLOCK_TOKENS = 16  # tokens per hashed block (vLLM's default KV block size)
MAX_BLOCKS = 4  # leading blocks that decide the replica
VNODES_PER_WEIGHT = 64
LOAD_FACTOR = 1.25


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def prefix_key(token_ids: Sequence[int]) -> int:
    """Hash of the leading full blocks (or of the whole prompt when shorter than one block)."""
    blocks = min(len(token_ids) // BLOCK_TOKENS, MAX_BLOCKS)
    head = token_ids[: blocks * BLOCK_TOKENS] if blocks else token_ids
    return _hash64(array("q", head).tobytes())


@lru_cache(maxsize=64)
def ring(members: tuple[tuple[str, int], ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ring for (key, weight) members: sorted point hashes and, per point, a member index."""
    points: list[tuple[int, int]] = []
    for index, (key, weight) in enumerate(members):
        for v in range(VNODES_PER_WEIGHT * weight):
            points.append((_hash64(f"{key}#{v}".encode()), index))
    points.sort()
    return tuple(p for p, _ in points), tuple(i for _, i in points)


def capacity(replica: ReplicaState, total_in_flight: int, total_weight: int) -> int:
    """The most requests the replica may hold once this one is placed."""
    return math.ceil(LOAD_FACTOR * (total_in_flight + 1) * replica.weight / total_weight)


def choose(snapshot: Snapshot, request: RouteRequest) -> ReplicaState | None:
    replicas = snapshot.replicas
    if not replicas:
        return None
    if len(replicas) == 1:
        return replicas[0]
    hashes, owners = ring(tuple((r.key, r.weight) for r in replicas))
    total_in_flight = sum(r.in_flight for r in replicas)
    total_weight = sum(r.weight for r in replicas)
    start = bisect_left(hashes, prefix_key(request.prompt_token_ids))
    seen: set[int] = set()
    npoints = len(hashes)
    for step in range(npoints):
        index = owners[(start + step) % npoints]
        if index in seen:
            continue
        seen.add(index)
        candidate = replicas[index]
        if candidate.in_flight + 1 <= capacity(candidate, total_in_flight, total_weight):
            return candidate
        if len(seen) == len(replicas):
            break
    # Unreachable while LOAD_FACTOR >= 1 (capacities sum above the total); kept total.
    return min(replicas, key=lambda r: (r.in_flight + 1) / r.weight)
