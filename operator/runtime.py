"""What the operator's handlers share: settings, clients, kopf's indexes, windows, locks."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from scaleserve.operator.cluster import ClusterView
from scaleserve.operator.concurrency import Windows
from scaleserve.operator.drift import Drift
from scaleserve.operator.kube import Kube
from scaleserve.operator.metrics import OperatorMetrics
from scaleserve.operator.settings import OperatorSettings
from scaleserve.operator.spec import EndpointSpec, parse_spec

Emit = Callable[[str, str, str], None]  # (type: Normal|Warning, reason, message)
Key = tuple[str, str]  # namespace, name
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 300.0
RESYNC_S = 60.0  # every child is checked at least this often (drift repair)


def backoff_s(failures: int, jitter: float) -> float:
    """Delay before retrying an apply the API server refused `failures` times in a row:
    exponential from 5 s, jittered by `jitter` (a fraction in [0.8, 1.2)), capped at 5 min."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** max(0, failures - 1) * jitter)


@dataclass
class Runtime:
    """What handlers share: settings, API and HTTP clients, concurrency windows, locks, metrics."""

    settings: OperatorSettings
    kube: Kube
    http: aiohttp.ClientSession
    windows: Windows = field(default_factory=Windows)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], float] = time.monotonic
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # kopf's indexes the reconciles read (set at start-up)
    view: ClusterView | None = None
    # per endpoint: set when a child changed what the endpoint's status depends on; its
    # daemon (handlers.py) runs a pass at once instead of waiting for the next interval
    wakes: dict[Key, asyncio.Event] = field(default_factory=dict)
    # the last status written per endpoint, with the endpoint's UID: only the operator writes
    # the status, so it is newer than that of a body read before the write (a timer's body, or
    # a pass that waited for the endpoint's lock), and events are not emitted twice
    written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # choosing a node and reserving its GPUs (the group put into the cache) happen under one
    # lock, so two endpoints reconciled at once are never promised the same free GPUs
    placement: asyncio.Lock = field(default_factory=asyncio.Lock)
    # drift repair: when every child was last applied, endpoints with a child deleted since,
    # and children the API server refused (with its message) and when to try them again
    last_apply: dict[Key, float] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    rejected: dict[Key, dict[str, str]] = field(default_factory=dict)
    failures: dict[Key, int] = field(default_factory=dict)
    retry_at: dict[Key, float] = field(default_factory=dict)
    # what was applied to each child and what the watches saw of it since: a resync re-applies
    # only the children that drifted
    drift: Drift = field(init=False)
    # each endpoint's parsed spec, with the UID and generation it was parsed at
    specs: dict[Key, tuple[tuple[str, int], EndpointSpec]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.drift = Drift(self.clock, RESYNC_S)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def spec(self, body: Mapping[str, Any]) -> EndpointSpec:
        """The endpoint's spec, parsed once per generation (the API server raises it with every
        change of the spec): validating it is a sizeable part of a pass. Raises SpecError."""
        meta = body["metadata"]
        key, generation = (meta["namespace"], meta["name"]), meta.get("generation")
        cached = self.specs.get(key)
        if cached is not None and cached[0] == (meta["uid"], generation):
            return cached[1]
        spec = parse_spec(body.get("spec"))
        if isinstance(generation, int):
            self.specs[key] = ((meta["uid"], generation), spec)
        return spec

    def wake(self, key: Key) -> asyncio.Event:
        return self.wakes.setdefault(key, asyncio.Event())

    def resync_due(self, key: Key) -> bool:
        """Whether a pass checks every child and re-applies those that drifted: a child was
        deleted or changed, the resync period has passed, or the back-off after a refused apply
        is over."""
        now = self.clock()
        if key in self.rejected:
            return now >= self.retry_at.get(key, 0.0)
        last = self.last_apply.get(key)
        if key in self.dirty or last is None:
            return True
        # re-apply on the last tick before the period is over, so no child stays drifted longer
        return now - last + self.settings.reconcile_interval_s > RESYNC_S

    def applied(self, key: Key) -> None:
        """Every child was applied and accepted."""
        self.rejected.pop(key, None)
        self.failures.pop(key, None)
        self.retry_at.pop(key, None)
        self.last_apply[key] = self.clock()
        self.dirty.discard(key)

    def refused(self, key: Key, children: dict[str, str]) -> float:
        """The API server refused `children`; returns the delay before the next attempt."""
        self.rejected[key] = children
        self.failures[key] = self.failures.get(key, 0) + 1
        delay = backoff_s(self.failures[key], random.uniform(0.8, 1.2))
        self.retry_at[key] = self.clock() + delay
        return delay

    def forget(self, key: Key) -> None:
        """Drop an endpoint's in-memory state (it was deleted)."""
        self.locks.pop(key, None)
        self.wakes.pop(key, None)
        self.written.pop(key, None)
        self.specs.pop(key, None)
        self.last_apply.pop(key, None)
        self.rejected.pop(key, None)
        self.failures.pop(key, None)
        self.retry_at.pop(key, None)
        self.dirty.discard(key)

    @property
    def cluster(self) -> ClusterView:
        assert self.view is not None, "the operator's start-up sets the cluster view"
        return self.view
