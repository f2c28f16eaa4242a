"""EndpointSlice discovery against a real kube-apiserver: the pool follows the slices.

Needs the local control plane (the layer's fixtures, tests/control_plane/conftest.py), so it
belongs to the control_plane layer. The slices are written by the test (as the EndpointSlice
controller would write them for the engine Service) and point at addresses nothing listens on:
only membership and conditions are under test here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from scaleserve.gateway.discovery.kubernetes import EndpointSliceDiscovery
from scaleserve.gateway.pool import ReplicaPool
from scaleserve.gateway.settings import GatewaySettings
from tests.fixtures.cluster import KubeCluster

pytestmark = pytest.mark.control_plane


def endpoint_slice(name: str, service: str, endpoints: list[tuple[str, bool, bool, bool]]) -> Any:
    from kubernetes import client as k

    return k.V1EndpointSlice(
        metadata=k.V1ObjectMeta(
            name=name,
            labels={
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "scaleserve-tests",
            },
        ),
        address_type="IPv4",
        ports=[k.DiscoveryV1EndpointPort(name="grpc", port=50051, protocol="TCP")],
        endpoints=[
            k.V1Endpoint(
                addresses=[ip],
                conditions=k.V1EndpointConditions(ready=ready, serving=serving, terminating=term),
            )
            for ip, ready, serving, term in endpoints
        ],
    )


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def view(pool: ReplicaPool) -> dict[str, tuple[bool, bool]]:
    return {r.address: (r.serving, r.terminating) for r in pool.replicas if r.listed}


@pytest.mark.asyncio
async def test_endpointslice_watch_swaps_replicas(
    kube_cluster: KubeCluster, kube_api: Any, namespace: str
) -> None:
    from kubernetes import client as k

    api = k.DiscoveryV1Api(kube_api)

    def create(body: Any) -> None:
        api.create_namespaced_endpoint_slice(namespace, body)

    await asyncio.to_thread(
        create,
        endpoint_slice(
            "eng-a", "eng", [("10.0.0.1", True, True, False), ("10.0.0.2", False, False, False)]
        ),
    )
    await asyncio.to_thread(
        create, endpoint_slice("other-a", "other", [("10.0.9.9", True, True, False)])
    )
    pool = ReplicaPool()
    settings = GatewaySettings(discovery="kubernetes", namespace=namespace, service="eng")
    discovery = EndpointSliceDiscovery(pool, settings, kubeconfig=str(kube_cluster.kubeconfig))
    task = asyncio.create_task(discovery.run())
    try:
        await eventually(
            lambda: (
                view(pool) == {"10.0.0.1:50051": (True, False), "10.0.0.2:50051": (False, False)}
            ),
            "the first slice",
        )
        # A pod going away: terminating, still serving its requests, gets no new ones.
        await asyncio.to_thread(
            api.replace_namespaced_endpoint_slice,
            "eng-a",
            namespace,
            endpoint_slice(
                "eng-a", "eng", [("10.0.0.1", False, True, True), ("10.0.0.2", True, True, False)]
            ),
        )
        await eventually(
            lambda: view(pool) == {"10.0.0.1:50051": (True, True), "10.0.0.2:50051": (True, False)},
            "the terminating condition",
        )
        await asyncio.to_thread(
            create, endpoint_slice("eng-b", "eng", [("10.0.0.3", True, True, False)])
        )
        await eventually(lambda: "10.0.0.3:50051" in view(pool), "the second slice")
        await asyncio.to_thread(api.delete_namespaced_endpoint_slice, "eng-a", namespace)
        await eventually(
            lambda: view(pool) == {"10.0.0.3:50051": (True, False)}, "the deleted slice"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
