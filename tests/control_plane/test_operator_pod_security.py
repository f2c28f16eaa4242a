"""Engine and gateway pods are admitted where the `restricted` Pod Security Standard is enforced.

The API server's PodSecurity admission (on by default) is the judge: the test first shows it
refuses an ordinary pod in the namespace, so an endpoint becoming Ready there means its pods
passed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.cluster import GpuPool, wait_for
from tests.fixtures.endpoints import create_ready_endpoint, engine_pods, static_spec
from tests.fixtures.operator_harness import OperatorProcess

pytestmark = pytest.mark.control_plane


def _enforce_restricted(core: Any, namespace: str) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def _plain_pod(pool: GpuPool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {
            "containers": [{"name": "c", "image": "ghcr.io/scaleserve/scaleserve:0.1.0"}],
            **pool.pod_placement(),
        },
    }


def test_an_endpoint_becomes_ready_in_a_namespace_enforcing_restricted(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    core: Any = client.CoreV1Api(kube_api)
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    _enforce_restricted(core, namespace)
    with pytest.raises(ApiException) as refused:  # the admission the endpoint must pass
        core.create_namespaced_pod(namespace, _plain_pod(pool))
    assert refused.value.status == 403
    assert "violates PodSecurity" in json.loads(refused.value.body or "{}")["message"]

    spec = static_spec(pool, 2, 4, gateway={"replicas": 1, **pool.pod_placement()})
    create_ready_endpoint(kube_api, namespace, "chat", spec, operator)
    pods = engine_pods(kube_api, namespace, "chat")
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.service_account_name == "chat-engine"
        assert pod.spec.automount_service_account_token is False
        assert not any(v.projected for v in pod.spec.volumes or [])  # no token volume

    def gateway_pods() -> list[Any]:
        selector = "scaleserve.io/endpoint=chat,app.kubernetes.io/component=gateway"
        items = core.list_namespaced_pod(namespace, label_selector=selector).items
        return [p for p in items if p.status.phase == "Running"]

    (gateway,) = wait_for(gateway_pods, "the gateway pod admitted and running", timeout_s=60)
    assert gateway.spec.service_account_name == "chat-gateway"
    # discovery reads EndpointSlices with the gateway's token
    assert any(v.projected for v in gateway.spec.volumes or [])
