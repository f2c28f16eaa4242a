"""Two operators on one endpoint: the Lease holder acts alone, and a standby takes over.

Each operator applies with its own field manager, so the managers recorded on the endpoint's
children say which operator wrote them.
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.cluster import GpuPool, KubeCluster, wait_for
from tests.fixtures.endpoints import (
    create_endpoint,
    get_endpoint,
    patch_endpoint,
    static_spec,
    wait_phase,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StatsServer

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


def test_only_the_lease_holder_acts_and_a_standby_takes_over_within_30s(
    kube_api: Any,
    kube_cluster: KubeCluster,
    llmep_crd: str,
    namespace: str,
    gpu_pool: Any,
    stats_server: StatsServer,
    tmp_path: Path,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    apps: Any = client.AppsV1Api(kube_api)
    started: list[OperatorProcess] = []

    def start(tag: str) -> OperatorProcess:
        handle = OperatorProcess(
            kube_cluster,
            namespace,
            stats_server.url_template,
            tmp_path / f"operator-{tag}.log",
            extra_args=(
                "--leader-lease", f"{namespace}/{LEASE}", "--field-manager", f"operator-{tag}",
            ),
        )  # fmt: skip
        handle.start()
        started.append(handle)
        return handle

    try:
        first = start("a")
        wait_for(lambda: _holder(kube_api, namespace), "the first operator to take the Lease")
        assert first.proc is not None
        leader = _holder(kube_api, namespace)
        assert leader is not None
        assert leader.endswith(f"_{first.proc.pid}")
        second = start("b")
        wait_for(lambda: "stands by" in second.tail(), "the second operator to stand by")

        create_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 8))
        wait_phase(kube_api, namespace, "chat", "Ready", "Ready", op=first)
        assert _holder(kube_api, namespace) == leader
        for child in (
            apps.read_namespaced_deployment("chat-gateway", namespace),
            apps.read_namespaced_stateful_set("chat-g0-tp8", namespace),
        ):
            assert "operator-a" in _managers(child)
            assert "operator-b" not in _managers(child), child.metadata.name
        # the standby never started kopf: no handlers, and nothing on its metrics port
        with pytest.raises(urllib.error.URLError, match="refused"):
            second.metrics()

        first.kill()
        killed = time.monotonic()
        patch_endpoint(kube_api, namespace, "chat", {"spec": {"gateway": {"replicas": 2}}})

        def applied() -> bool:
            deployment = apps.read_namespaced_deployment("chat-gateway", namespace)
            return deployment.spec.replicas == 2 and "operator-b" in _managers(deployment)

        wait_for(applied, "the standby to apply the spec change", timeout_s=TAKEOVER_S)
        took_s = time.monotonic() - killed
        holder = _holder(kube_api, namespace)
        assert holder is not None
        assert second.proc is not None
        assert holder.endswith(f"_{second.proc.pid}")
        generation = get_endpoint(kube_api, namespace, "chat")["metadata"]["generation"]
        wait_status(
            kube_api,
            namespace,
            "chat",
            lambda s: s.get("observedGeneration") == generation and s.get("phase") == "Ready",
            "the new leader's status",
            op=second,
        )
        print(f"standby applied the change {took_s:.1f} s after the leader was killed")
        second.stop()  # a clean exit gives the Lease up: the next replica need not wait
        assert not second.alive()
        assert _holder(kube_api, namespace) is None
    finally:
        for handle in started:
            handle.stop()
