"""What the operator's handlers share: settings, clients, watched caches, windows, locks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from scaleserve.operator.cluster import ClusterView
from scaleserve.operator.concurrency import Windows
from scaleserve.operator.kube import Kube
from scaleserve.operator.metrics import OperatorMetrics
from scaleserve.operator.settings import OperatorSettings

Emit = Callable[[str, str, str], None]  # (type: Normal|Warning, reason, message)


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
    # watched caches the reconciles read (set at start-up, once the watches have listed)
    view: ClusterView | None = None
    # the last status written per endpoint, with the endpoint's UID: only the operator writes
    # the status, so it is newer than that of a body read before the write (a timer's body, or
    # a pass that waited for the endpoint's lock), and events are not emitted twice
    written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # choosing a node and reserving its GPUs (the group put into the cache) happen under one
    # lock, so two endpoints reconciled at once are never promised the same free GPUs
    placement: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    @property
    def cluster(self) -> ClusterView:
        assert self.view is not None, "the operator's start-up sets the cluster view"
        return self.view
