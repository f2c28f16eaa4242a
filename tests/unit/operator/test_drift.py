"""Drift repair: which children a resync re-applies (drift.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scaleserve.operator.drift import Drift

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(port: int = 8000) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "chat-gateway", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def answer(manifest: dict[str, Any], version: int, **extra: Any) -> dict[str, Any]:
    """What the API server answers: the manifest with its defaults and bookkeeping."""
    out = copy.deepcopy(manifest)
    out["metadata"] |= {
        "resourceVersion": str(version),
        "uid": "u1",
        "managedFields": [{"manager": "scaleserve-operator"}],
    }
    out["spec"]["ports"][0] |= {
        "protocol": "TCP",
        "targetPort": manifest["spec"]["ports"][0]["port"],
    }
    out["status"] = {"loadBalancer": {}}
    out |= extra
    return out


@pytest.fixture
def drift() -> Drift:
    return Drift(Clock(), grace_s=60.0)


def test_a_child_never_applied_is_due(drift: Drift) -> None:
    assert not drift.current(service())


def test_an_applied_child_unchanged_since_is_current(drift: Drift) -> None:
    drift.record(service(), answer(service(), 10))
    assert drift.current(service())  # the watch has not delivered it yet
    assert not drift.seen(answer(service(), 10), deleted=False)  # the operator's own write
    assert drift.current(service())


def test_a_status_update_or_a_controllers_annotation_is_no_drift(drift: Drift) -> None:
    drift.record(service(), answer(service(), 10))
    later = answer(service(), 11, status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})
    later["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    later["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    assert not drift.seen(later, deleted=False)
    assert drift.current(service())


def test_a_hand_edit_is_drift_and_makes_the_child_due(drift: Drift) -> None:
    drift.record(service(), answer(service(), 10))
    edited = answer(service(), 11)
    edited["spec"]["ports"][0]["port"] = 9999
    assert drift.seen(edited, deleted=False)
    assert not drift.current(service())
    # applied again: current once more
    drift.record(service(), answer(service(), 12))
    assert not drift.seen(answer(service(), 12), deleted=False)
    assert drift.current(service())


def test_a_watch_behind_the_apply_is_no_drift(drift: Drift) -> None:
    drift.seen(answer(service(8000), 10), deleted=False)
    drift.record(service(8001), answer(service(8001), 12))
    assert drift.current(service(8001))  # the watch still shows version 10


def test_a_deleted_child_is_due(drift: Drift) -> None:
    drift.record(service(), answer(service(), 10))
    drift.seen(answer(service(), 10), deleted=False)
    assert drift.seen(answer(service(), 10), deleted=True)
    assert not drift.current(service())


def test_a_child_the_watch_never_showed_is_due_after_the_grace(drift: Drift) -> None:
    clock = drift.clock
    assert isinstance(clock, Clock)
    drift.record(service(), answer(service(), 10))
    clock.now += 59
    assert drift.current(service())
    clock.now += 2  # a deletion the watch missed
    assert not drift.current(service())


def test_a_changed_desired_manifest_is_due(drift: Drift) -> None:
    drift.record(service(8000), answer(service(8000), 10))
    drift.seen(answer(service(8000), 10), deleted=False)
    assert not drift.current(service(8001))


def test_a_forgotten_child_changing_is_no_drift(drift: Drift) -> None:
    drift.record(service(), answer(service(), 10))
    drift.forget(("Service", "ns", "chat-gateway"))
    edited = answer(service(), 11)
    edited["metadata"]["annotations"] = {"retiring": "now"}
    assert not drift.seen(edited, deleted=False)
