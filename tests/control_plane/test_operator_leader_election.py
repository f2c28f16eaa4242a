"""Two operators on one endpoint: the Lease holder acts alone, and a standby takes over.

Each operator applies with its own field manager, so the managers recorded on the endpoint's
children say which operator wrote them.
"""

from __future__ import annotations

import time
import urllib.error
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.cluster import GpuPool, wait_for
from tests.fixtures.endpoints import (
    create_endpoint,
    get_endpoint,
    patch_endpoint,
    ready_for_generation,
    static_spec,
    wait_phase,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StartOperator

pytestmark = pytest.mark.control_plane

LEASE = "scaleserve-operator"
TAKEOVER_S = 30.0  # the standby acts within this long of the leader's death


def _holder(kube_api: Any, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(LEASE, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    holder: str | None = lease.spec.holder_identity
    return holder


def _managers(obj: Any) -> set[str]:
    return {m.manager for m in obj.metadata.managed_fields or []}


def _assert_holder(kube_api: Any, namespace: str, op: OperatorProcess) -> str:
    """The Lease is held by `op` (its identity ends in its pid); the holder's identity."""
    holder = _holder(kube_api, namespace)
    assert holder is not None
    assert op.proc is not None
    assert holder.endswith(f"_{op.proc.pid}")
    return holder


def _assert_only_the_leader_wrote(kube_api: Any, namespace: str, standby: OperatorProcess) -> None:
    apps: Any = client.AppsV1Api(kube_api)
    for child in (
        apps.read_namespaced_deployment("chat-gateway", namespace),
        apps.read_namespaced_stateful_set("chat-g0-tp8", namespace),
    ):
        assert "operator-a" in _managers(child)
        assert "operator-b" not in _managers(child), child.metadata.name
    # the standby never started kopf: no handlers, and nothing on its metrics port
    with pytest.raises(urllib.error.URLError, match="refused"):
        standby.metrics()


def _standby_applies_a_change(kube_api: Any, namespace: str, standby: OperatorProcess) -> float:
    """A spec change after the leader died is applied by the standby within TAKEOVER_S and its
    status written; seconds from the change to the apply."""
    apps: Any = client.AppsV1Api(kube_api)
    changed = time.monotonic()
    patch_endpoint(kube_api, namespace, "chat", {"spec": {"gateway": {"replicas": 2}}})

    def applied() -> bool:
        deployment = apps.read_namespaced_deployment("chat-gateway", namespace)
        return deployment.spec.replicas == 2 and "operator-b" in _managers(deployment)

    wait_for(applied, "the standby to apply the spec change", timeout_s=TAKEOVER_S)
    took_s = time.monotonic() - changed
    _assert_holder(kube_api, namespace, standby)
    generation = get_endpoint(kube_api, namespace, "chat")["metadata"]["generation"]
    wait_status(
        kube_api,
        namespace,
        "chat",
        ready_for_generation(generation),
        "the new leader's status",
        op=standby,
    )
    return took_s


def test_only_the_lease_holder_acts_and_a_standby_takes_over_within_30s(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    start_operator: StartOperator,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)

    def start(tag: str) -> OperatorProcess:
        lease = ("--leader-lease", f"{namespace}/{LEASE}")
        return start_operator(tag, *lease, "--field-manager", f"operator-{tag}")

    first = start("a")
    wait_for(lambda: _holder(kube_api, namespace), "the first operator to take the Lease")
    leader = _assert_holder(kube_api, namespace, first)
    second = start("b")
    wait_for(lambda: "stands by" in second.tail(), "the second operator to stand by")

    create_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 8))
    wait_phase(kube_api, namespace, "chat", "Ready", "Ready", op=first)
    assert _holder(kube_api, namespace) == leader
    _assert_only_the_leader_wrote(kube_api, namespace, second)

    first.kill()
    took_s = _standby_applies_a_change(kube_api, namespace, second)
    print(f"standby applied the change {took_s:.1f} s after the leader was killed")
    second.stop()  # a clean exit gives the Lease up: the next replica need not wait
    assert not second.alive()
    assert _holder(kube_api, namespace) is None
