"""List-then-watch caches of the objects the operator reads, so a reconcile reads memory.

One `Informer` per kind and selector: it lists once, then follows a watch from the list's
resourceVersion, re-listing when the watch expires (410 Gone) or breaks. Writes the operator
makes itself are put into the cache at once (`assume`) from the API server's answer, so the
next read sees them before the watch delivers them; an event older than what is cached (by
resourceVersion) never overwrites it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from scaleserve.operator.errors import ClusterError
from scaleserve.operator.kube import Kube, path

log = logging.getLogger("scaleserve.operator.informer")

Key = tuple[str, str]  # namespace ("" when cluster-scoped), name
OnChange = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]  # (old, new)
WATCH_TIMEOUT_S = 290
RETRY_S = 1.0


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _version(obj: Mapping[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    # managedFields is most of an object's size and nothing here reads it
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


class Informer:
    """Objects of one kind matching a selector, kept current by a watch."""

    def __init__(
        self,
        kube: Kube,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: str | None = None,
        on_change: OnChange | None = None,
        index: Callable[[Mapping[str, Any]], Hashable | None] | None = None,
    ) -> None:
        self.kube, self.kind, self.namespace = kube, kind, namespace
        self.labels, self.fields = dict(labels or {}), fields
        self.on_change = on_change
        self.objects: dict[Key, dict[str, Any]] = {}
        self._index = index
        self._by: dict[Hashable, dict[Key, None]] = {}
        self.synced = asyncio.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.objects.values()))

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def indexed(self, value: Hashable) -> list[dict[str, Any]]:
        """The objects whose `index(obj)` is `value`."""
        return [self.objects[k] for k in self._by.get(value, ())]

    def assume(self, obj: dict[str, Any]) -> None:
        """Take an object the API server just returned for the operator's own write (the
        writer knows what it wrote: no change callback)."""
        if obj.get("metadata", {}).get("name"):
            self._put(_slim(obj), notify=False)

    def discard(self, obj: Mapping[str, Any]) -> None:
        """Forget `obj` (the very object given to `assume`) unless something replaced it."""
        key = key_of(obj)
        if self.objects.get(key) is obj:
            del self.objects[key]
            self._changed(dict(obj), None, notify=False)

    def assume_deleted(self, namespace: str, name: str, stamp: str) -> None:
        """Mark an object the operator just deleted as terminating until the watch says more."""
        old = self.objects.get((namespace, name))
        if old is not None:
            new = {**old, "metadata": {**old["metadata"], "deletionTimestamp": stamp}}
            self.objects[(namespace, name)] = new
            self._changed(old, new, notify=False)

    def handle(self, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; returns the resourceVersion it carries."""
        kind, obj = event.get("type"), dict(event.get("object") or {})
        if kind in ("ADDED", "MODIFIED"):
            self._put(_slim(obj))
        elif kind == "DELETED":
            self._drop(obj)
        version = obj.get("metadata", {}).get("resourceVersion")
        return str(version) if version else None

    def _put(self, obj: dict[str, Any], *, notify: bool = True) -> None:
        key = key_of(obj)
        old = self.objects.get(key)
        if old is not None and _version(obj) < _version(old):
            return
        self.objects[key] = obj
        self._changed(old, obj, notify=notify)

    def _drop(self, obj: Mapping[str, Any]) -> None:
        old = self.objects.pop(key_of(obj), None)
        if old is not None:
            self._changed(old, None)

    def _changed(
        self, old: dict[str, Any] | None, new: dict[str, Any] | None, *, notify: bool = True
    ) -> None:
        if self._index is not None:
            before = self._index(old) if old is not None else None
            after = self._index(new) if new is not None else None
            key = key_of(new if new is not None else old or {})
            if before is not None and before != after:
                bucket = self._by.get(before, {})
                bucket.pop(key, None)
                if not bucket:
                    self._by.pop(before, None)
            if after is not None:
                self._by.setdefault(after, {})[key] = None
        # the first listing reports nothing: callbacks are about changes, not the initial state
        if notify and self.on_change is not None and self.synced.is_set():
            try:
                self.on_change(old, new)
            except Exception:  # a callback's bug must not stop the watch
                log.exception("%s informer: change callback failed", self.kind)

    def _query(self) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        if self.labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in self.labels.items())))
        if self.fields:
            query.append(("fieldSelector", self.fields))
        return query

    async def _list(self) -> str:
        url = path(self.kind, self.namespace)
        data = await self.kube.request("GET", url, query=self._query())
        fresh = {key_of(o): _slim(o) for o in data.get("items") or []}
        for key in set(self.objects) - set(fresh):
            self._changed(self.objects.pop(key), None)
        for obj in fresh.values():
            self._put(obj)
        self.synced.set()
        return str(data.get("metadata", {}).get("resourceVersion") or "")

    async def run(self) -> None:
        """List and watch until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    version = await self._list()
                version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network, API server restarts: list again
                log.warning("%s informer: %s; listing again", self.kind, exc)
                version = ""
                await asyncio.sleep(RETRY_S)

    async def _watch(self, version: str) -> str:
        """Follow one watch; returns the version to resume from ("" to list again)."""
        query = [
            *self._query(),
            ("watch", "1"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_TIMEOUT_S)),
        ]
        async with self.kube.stream(path(self.kind, self.namespace), query) as lines:
            async for line in lines:
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return ""
                    raise ClusterError(f"watch {self.kind}: {obj.get('message')}")
                version = self.handle(event) or version
        return version


async def start(informers: list[Informer], timeout_s: float = 60.0) -> list[asyncio.Task[None]]:
    """Run the informers in the background; returns once each has listed."""
    tasks = [asyncio.create_task(i.run(), name=f"informer-{i.kind}") for i in informers]
    try:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers)), timeout_s)
    except BaseException:
        await stop(tasks)
        raise
    return tasks


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
