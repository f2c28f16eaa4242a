"""Reconcile an endpoint promptly when one of its children changes readiness.

The periodic timer alone notices an engine StatefulSet or gateway Deployment becoming ready
only on its next tick (`reconcile_interval_s` later). The cluster view's watches call `add`
instead; `run` collects what was added over a short window and reconciles each endpoint once,
a few at a time. Events of these passes are posted directly (they run outside kopf's handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from scaleserve.operator.errors import ClusterError
from scaleserve.operator.kube import Kube, path

log = logging.getLogger("scaleserve.operator")

Reconcile = Callable[[dict[str, Any]], Awaitable[None]]
Post = Callable[[Mapping[str, Any], str, str, str], None]  # (body, type, reason, message)


class Requeue:
    """Endpoints (namespace, name) waiting for a prompt reconcile."""

    def __init__(
        self, kube: Kube, reconcile: Reconcile, *, window_s: float = 0.2, concurrency: int = 8
    ) -> None:
        self.kube, self.reconcile = kube, reconcile
        self.window_s = window_s
        self._pending: dict[tuple[str, str], None] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, namespace: str, name: str) -> None:
        self._pending[(namespace, name)] = None
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self.window_s)  # coalesce a burst of changes
                self._wake.clear()
                batch, self._pending = list(self._pending), {}
                for key in batch:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._one(*key))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _one(self, namespace: str, name: str) -> None:
        try:
            body = await self.kube.get("LLMEndpoint", namespace, name)
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                await self.reconcile(body)
        except ClusterError as exc:  # the timer's next tick retries
            log.warning("%s/%s: prompt reconcile failed: %s", namespace, name, exc)
        finally:
            self._slots.release()


def event_manifest(
    body: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event about `body` (what kopf posts for its handlers)."""
    meta = body["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "scaleserve-operator"},
        "reportingComponent": "scaleserve-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventPoster:
    """Posts Events in the background; `close` waits for those still in flight."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        event = event_manifest(body, kind, reason, message, datetime.now(UTC))
        task = asyncio.create_task(self._post(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        url = path("Event", event["metadata"]["namespace"])
        try:
            await self.kube.request("POST", url, body=event)
        except ClusterError as exc:
            log.warning("could not post event %s: %s", event["reason"], exc)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
