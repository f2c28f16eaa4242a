"""An endpoint recreated under the name of a deleted one starts afresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scaleserve.operator.builders import Owner
from scaleserve.operator.concurrency import Windows, endpoint_key
from scaleserve.operator.kube import Kube
from scaleserve.operator.layout import Layout, Window
from scaleserve.operator.snapshot import Snapshot, parse_group
from scaleserve.operator.spec import parse_spec
from scaleserve.operator.target import choose_target

pytestmark = pytest.mark.unit

OLD_UID, NEW_UID = "uid-deleted", "uid-new"
SPEC = parse_spec(
    {
        "model": {"uri": "hf://org/tiny"},
        "gpu": {"perNode": 2},
        "autoscaling": {
            "gpuBudget": 2,
            "tensorParallelCandidates": [2, 1],
            "concurrencyThresholds": [8],
            "windowSeconds": 10,
            "cooldownSeconds": 0,
        },
    }
)


def statefulset(group: str, tp: int, size: int, owner_uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"chat-{group}",
            "namespace": "ns",
            "generation": 1,
            "labels": {
                "scaleserve.io/group": group,
                "scaleserve.io/tensor-parallel": str(tp),
                "scaleserve.io/group-gpus": str(size),
            },
            "ownerReferences": [{"kind": "LLMEndpoint", "name": "chat", "uid": owner_uid}],
        },
        "spec": {"replicas": size // tp},
        "status": {"observedGeneration": 1, "readyReplicas": size // tp},
    }


def test_a_statefulset_of_another_owner_is_not_one_of_the_endpoints_groups() -> None:
    sts = statefulset("g0-tp1", 1, 2, OLD_UID)
    leftover = parse_group(sts, NEW_UID)
    mine = parse_group(sts, OLD_UID)
    unchecked = parse_group(sts)
    assert leftover is not None
    assert mine is not None
    assert unchecked is not None
    assert leftover.terminating
    assert not mine.terminating
    assert mine.is_ready
    assert not unchecked.terminating


def test_in_memory_state_is_keyed_by_uid() -> None:
    old = endpoint_key({"namespace": "ns", "name": "chat", "uid": OLD_UID})
    new = endpoint_key({"namespace": "ns", "name": "chat", "uid": NEW_UID})
    assert old != new


def _window(meta: dict[str, str], windows: Windows) -> Window:
    """The window observe hands to decide for the endpoint `meta` (read at t=12 s)."""
    return windows.get(endpoint_key(meta), 12.0, 10)


def _filled(meta: dict[str, str], value: float) -> Windows:
    windows = Windows()
    for t in range(0, 12, 2):
        windows.add(endpoint_key(meta), float(t), value, 10)
    return windows


def _snapshot(
    meta: dict[str, str], status: dict[str, Any], groups: list[Any], window: Window
) -> Snapshot:
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    return Snapshot(owner, 1, status, tuple(groups), window=window)


OLD = {"namespace": "ns", "name": "chat", "uid": OLD_UID}
NEW = {"namespace": "ns", "name": "chat", "uid": NEW_UID}
NOW = datetime(2025, 1, 1, 0, 10, tzinfo=UTC)


def test_a_recreated_endpoint_starts_at_its_initial_layout_without_a_reshape() -> None:
    # the deleted endpoint ran at 2x1 through a full window of low concurrency, and its
    # StatefulSets still await garbage collection when the new endpoint arrives
    windows = _filled(OLD, 1.0)
    assert _window(OLD, windows).samples > 0
    groups = [parse_group(statefulset("g0-tp1", 1, 2, OLD_UID), NEW_UID)]
    target, events = choose_target(
        SPEC, _snapshot(NEW, {}, groups, _window(NEW, windows)), False, NOW
    )
    assert target.layout == Layout(1, 2)
    assert events == ()


def test_a_recreated_endpoint_does_not_decide_on_the_deleted_ones_window() -> None:
    windows = _filled(OLD, 100.0)
    status = {"targetLayout": "1x2", "lastReshapeTime": "2025-01-01T00:00:00Z"}
    target, events = choose_target(
        SPEC, _snapshot(NEW, status, [], _window(NEW, windows)), False, NOW
    )
    assert target.layout == Layout(1, 2)
    assert "collecting" in target.note
    assert events == ()
    # the same window under the old UID would have reshaped
    moved, _ = choose_target(SPEC, _snapshot(NEW, status, [], _window(OLD, windows)), False, NOW)
    assert moved.layout == Layout(2, 1)


class _Recorder(Kube):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, str]] = []

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        self.calls.append((method, url, body, content_type))
        return {}


@pytest.mark.asyncio
async def test_status_is_written_only_to_the_object_with_the_endpoints_uid() -> None:
    kube = _Recorder()
    await kube.patch_status("ns", "chat", {"phase": "Ready"}, uid=NEW_UID)
    await kube.patch_status("ns", "chat", {"phase": "Pending"}, uid=NEW_UID, has_status=False)
    (_, url, body, kind), (_, _, first, _) = kube.calls
    assert url.endswith("/namespaces/ns/llmendpoints/chat/status")
    assert kind == "application/json-patch+json"
    assert body == [
        {"op": "test", "path": "/metadata/uid", "value": NEW_UID},
        {"op": "add", "path": "/status/phase", "value": "Ready"},
    ]
    assert first[1] == {"op": "add", "path": "/status", "value": {"phase": "Pending"}}
