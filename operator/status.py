"""Status and conditions of an LLMEndpoint (pure: built from what reconcile observed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def conditions(
    previous: Sequence[Mapping[str, Any]],
    current: Sequence[Condition],
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Conditions in Kubernetes form; lastTransitionTime moves only when a status flips."""
    before = {c.get("type"): c for c in previous}
    out = []
    for cond in current:
        status = "True" if cond.status else "False"
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        item: dict[str, Any] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def phase(*, groups: int, ready: bool, reshaping: bool, degraded: bool, initial: bool) -> str:
    if degraded:
        return "Degraded"
    if groups == 0 and not ready:
        return "Pending"
    if initial and not ready:
        return "Deploying"
    if reshaping:
        return "Reshaping"
    return "Ready" if ready else "Deploying"


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status patch would change anything (conditions compared without timestamps)."""
    for key, value in new.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
            old_c = old.get("conditions") or []
            old_strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old_c]
            if strip != old_strip:
                return True
        elif old.get(key) != value:
            return True
    return False


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def reshape_completed(
    previous: str | None, started: str | None, done: bool, now: str
) -> str | None:
    """status.lastReshapeCompletedTime: `now` once the reshape started at `started` is done.

    previous: the recorded completion; kept while the reshape is under way, and when it is
    already at or after `started` (the completion of this reshape was recorded before).
    """
    if not done or started is None:
        return previous
    if previous is not None and _time(previous) >= _time(started):
        return previous
    return now
