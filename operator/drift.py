"""Drift repair without re-applying what has not drifted.

For every child the operator keeps what it last applied (a digest of the desired manifest, and
the resourceVersion and a fingerprint of the object the API server answered with) and what the
watches last saw of it. A child is re-applied only when its desired manifest changed, it is
gone, or it changed since the operator's apply (by hand, or by another client): one watch event
and a dictionary lookup instead of one server-side apply per child and resync period.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Child = tuple[str, str, str]  # kind, namespace, name
# set by the API server on every write, or kept by the API server for its own bookkeeping
SERVER_META = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")
# written by Kubernetes' own controllers after the operator's apply, not a drift
CONTROLLER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def child_of(obj: Mapping[str, Any]) -> Child:
    meta = obj.get("metadata") or {}
    return obj.get("kind") or "", meta.get("namespace") or "", meta.get("name") or ""


def version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def digest(obj: Any) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def fingerprint(obj: Mapping[str, Any]) -> bytes:
    """What a change of the object by anyone but the API server and its controllers changes:
    everything but the status and the server's bookkeeping."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_META}
    annotations = {
        k: v
        for k, v in (meta.pop("annotations", None) or {}).items()
        if k not in CONTROLLER_ANNOTATIONS
    }
    if annotations:
        meta["annotations"] = annotations
    return digest({**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta})


@dataclass(frozen=True)
class Applied:
    desired: bytes  # digest of the manifest applied
    version: int  # resourceVersion of the API server's answer
    state: bytes  # fingerprint of the API server's answer
    at: float  # when (the runtime's clock)


@dataclass
class Drift:
    """What was applied to each child and what the watches saw of it since."""

    clock: Callable[[], float]
    # a child absent from the watches this long after its apply is taken for gone (a deletion
    # the watch missed while it reconnected)
    grace_s: float
    applied: dict[Child, Applied] = field(default_factory=dict)
    live: dict[Child, tuple[int, bytes]] = field(default_factory=dict)

    def record(self, manifest: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        """The API server accepted `manifest` and answered with `answer`."""
        child = child_of(manifest)
        self.applied[child] = Applied(
            digest(manifest), version(answer), fingerprint(answer), self.clock()
        )

    def seen(self, obj: Mapping[str, Any], *, deleted: bool) -> bool:
        """A watch event of a child; returns whether the child left what was applied to it."""
        child = child_of(obj)
        if deleted:
            self.live.pop(child, None)
            return self.applied.pop(child, None) is not None
        now = (version(obj), fingerprint(obj))
        self.live[child] = now
        last = self.applied.get(child)
        return last is not None and now[0] > last.version and now[1] != last.state

    def forget(self, child: Child) -> None:
        """The operator changed `child` by other means than applying it, for good."""
        self.applied.pop(child, None)

    def current(self, manifest: Mapping[str, Any]) -> bool:
        """Whether the child already is `manifest` as applied: the same desired manifest was
        applied, and the child has not changed since (a watch that has not yet delivered the
        apply shows an older version, which counts as unchanged)."""
        last = self.applied.get(child_of(manifest))
        if last is None or last.desired != digest(manifest):
            return False
        live = self.live.get(child_of(manifest))
        if live is None:
            return self.clock() - last.at < self.grace_s
        return live[0] <= last.version or live[1] == last.state
