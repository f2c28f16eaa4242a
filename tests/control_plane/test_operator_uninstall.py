"""Deleting an endpoint while no operator runs behaves as docs/operator.md ("Uninstalling") says.

An endpoint that carries the operator's finalizer stays Terminating until an operator (or the
documented command that removes the finalizer) lets it go; its children then go with it
through their owner references, without an operator.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.cluster import GpuPool, wait_for
from tests.fixtures.endpoints import (
    create_ready_endpoint,
    delete_endpoint,
    get_endpoint,
    patch_endpoint,
    static_spec,
)
from tests.fixtures.operator_harness import OperatorProcess

pytestmark = pytest.mark.control_plane

FINALIZER = "scaleserve.io/finalizer"


def _gone(kube_api: Any, namespace: str, name: str) -> bool:
    try:
        get_endpoint(kube_api, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _children(kube_api: Any, namespace: str) -> list[str]:
    apps: Any = client.AppsV1Api(kube_api)
    return [
        *(s.metadata.name for s in apps.list_namespaced_stateful_set(namespace).items),
        *(d.metadata.name for d in apps.list_namespaced_deployment(namespace).items),
    ]


def test_an_endpoint_deleted_while_the_operator_is_down_goes_as_documented(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    create_ready_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 8), operator)
    finalizers = get_endpoint(kube_api, namespace, "chat")["metadata"].get("finalizers") or []
    assert _children(kube_api, namespace)
    operator.stop()

    delete_endpoint(kube_api, namespace, "chat")
    if finalizers:
        assert finalizers == [FINALIZER]  # the one the docs tell users to remove
        time.sleep(3)  # no operator: nothing lets the endpoint go
        stuck = get_endpoint(kube_api, namespace, "chat")["metadata"]
        assert stuck.get("deletionTimestamp")
        assert stuck["finalizers"] == [FINALIZER]
        # the documented way out: `kubectl patch llmep chat --type=merge -p
        # '{"metadata":{"finalizers":null}}'`
        patch_endpoint(kube_api, namespace, "chat", {"metadata": {"finalizers": None}})
    wait_for(lambda: _gone(kube_api, namespace, "chat"), "the endpoint gone", timeout_s=30)
    # children carry owner references: the garbage collector removes them, no operator needed
    wait_for(lambda: not _children(kube_api, namespace), "the children gone", timeout_s=60)
