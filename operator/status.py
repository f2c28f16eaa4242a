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


@dataclass(frozen=True)
class Progress:
    """Where the endpoint's groups stand against the target, as decide sees them after its
    steps: the groups (created ones included, deleted ones left out) and what is pending."""

    ready_replicas: int
    replicas: int
    gpus: int
    current_layout: str
    all_ready: bool
    transition: str  # the plan's summary ("" at target)
    waiting: str  # what the next step waits for
    held: str  # why the rollout holds ("" if it does not)
    stuck: str  # engine pods stuck Pending ("" if none)
    rejected: str  # children the API server refused ("" if none)
    problem: str = ""  # what keeps the autoscaling policy from choosing ("" if nothing)

    @property
    def reshaping(self) -> bool:
        return bool(self.transition) and not self.held

    @property
    def degraded(self) -> bool:
        return bool(self.stuck or self.rejected or self.problem)


def _message(p: Progress, target: str, note: str) -> str:
    if p.held:
        message = p.held
    elif p.transition:
        message = p.transition + (f"; {p.waiting}" if p.waiting else "")
    else:
        message = f"at {target}" + (f" ({note})" if note else "")
    for problem in (p.stuck, p.rejected, p.problem):
        if problem:
            message = f"{problem}; {message}"
    return message


def build(
    old: Mapping[str, Any],
    p: Progress,
    *,
    target: str,
    note: str,
    gateways: int,
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    """The endpoint's status (without the autoscaling fields, added by the caller)."""
    serving = p.ready_replicas > 0 and gateways > 0
    message = _message(p, target, note)
    new: dict[str, Any] = {
        "phase": _phase(old, p, target=target, serving=serving),
        "currentLayout": p.current_layout,
        "targetLayout": target,
        "readyReplicas": p.ready_replicas,
        "replicas": p.replicas,
        "gpus": p.gpus,
        "message": message,
        "observedGeneration": generation,
    }
    current = _conditions(p, target=target, gateways=gateways, message=message)
    new["conditions"] = conditions(old.get("conditions") or [], current, now, generation)
    return new


def _phase(old: Mapping[str, Any], p: Progress, *, target: str, serving: bool) -> str:
    if target == "0" and not p.replicas and not p.degraded:
        return "Idle"
    return phase(
        groups=p.replicas,
        ready=serving and p.all_ready,
        reshaping=p.reshaping,
        degraded=p.degraded,
        initial=old.get("phase") in (None, "Pending", "Deploying"),
    )


def _conditions(p: Progress, *, target: str, gateways: int, message: str) -> list[Condition]:
    """Ready, Reshaping, Held and Degraded, as the progress says."""
    serving, reshaping, degraded = p.ready_replicas > 0 and gateways > 0, p.reshaping, p.degraded
    why = "RolloutRejected" if p.rejected else "PodsPending" if p.stuck else "ProfileUnusable"
    return [
        Condition(
            "Ready",
            serving,
            "Serving" if serving else "NotServing",
            f"{p.ready_replicas} engine replica(s) and {gateways} gateway(s) ready",
        ),
        Condition(
            "Reshaping",
            reshaping,
            "Transition" if reshaping else ("Held" if p.held else "AtTarget"),
            p.transition if reshaping else (p.held or f"at {target}"),
        ),
        Condition("Held", bool(p.held), "NoSpareGPUs" if p.held else "NotHeld", p.held),
        Condition(
            "Degraded",
            degraded,
            why if degraded else "AsExpected",
            message if degraded else "no engine pods stuck Pending, every child applied",
        ),
    ]
