"""Drift repair against a real control plane: children deleted or edited by hand come back."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.cluster import GpuPool, wait_for
from tests.fixtures.endpoints import create_ready_endpoint, static_spec
from tests.fixtures.operator_harness import OperatorProcess

pytestmark = pytest.mark.control_plane


def _ready(kube_api: Any, namespace: str, pool: GpuPool, operator: OperatorProcess) -> None:
    create_ready_endpoint(kube_api, namespace, "chat", static_spec(pool, 1, 1), operator)


def test_deleted_children_come_back_within_the_resync_period(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    _ready(kube_api, namespace, gpu_pool(nodes=1, gpus=8), operator)
    core = client.CoreV1Api(kube_api)
    net = client.NetworkingV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    old = {
        "Service": core.read_namespaced_service("chat-engine", namespace).metadata.uid,
        "NetworkPolicy": net.read_namespaced_network_policy("chat-engine", namespace).metadata.uid,
        "Role": rbac.read_namespaced_role("chat-gateway", namespace).metadata.uid,
    }
    core.delete_namespaced_service("chat-engine", namespace)
    net.delete_namespaced_network_policy("chat-engine", namespace)
    rbac.delete_namespaced_role("chat-gateway", namespace)

    def uid(read: Any, name: str) -> str | None:
        try:
            return str(read(name, namespace).metadata.uid)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def back() -> bool:
        now = {
            "Service": uid(core.read_namespaced_service, "chat-engine"),
            "NetworkPolicy": uid(net.read_namespaced_network_policy, "chat-engine"),
            "Role": uid(rbac.read_namespaced_role, "chat-gateway"),
        }
        return all(now[k] is not None and now[k] != old[k] for k in old)

    # the resync period is 60 s; the rest is slack for a busy machine
    wait_for(back, "the deleted Service, NetworkPolicy and Role re-created", timeout_s=90)


def test_children_edited_by_hand_are_restored_within_the_resync_period(
    kube_api: Any, namespace: str, gpu_pool: Any, operator: OperatorProcess
) -> None:
    _ready(kube_api, namespace, gpu_pool(nodes=1, gpus=8), operator)
    core = client.CoreV1Api(kube_api)
    net = client.NetworkingV1Api(kube_api)

    def target_port() -> Any:
        return core.read_namespaced_service("chat-gateway", namespace).spec.ports[0].target_port

    def rule_ports() -> list[int]:
        policy = net.read_namespaced_network_policy("chat-engine", namespace)
        return [p.port for rule in policy.spec.ingress for p in rule.ports or []]

    want_target, want_rules = target_port(), rule_ports()
    assert want_target == "http"
    # JSON patches as a hand edit would make them: the Service's target port, and the port the
    # NetworkPolicy's metrics rule opens
    service = core.patch_namespaced_service(
        "chat-gateway",
        namespace,
        [{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 9999}],
    )
    policy = net.patch_namespaced_network_policy(
        "chat-engine",
        namespace,
        [{"op": "replace", "path": "/spec/ingress/1/ports/0/port", "value": 9999}],
    )
    assert service.spec.ports[0].target_port == 9999
    assert policy.spec.ingress[1].ports[0].port == 9999

    def restored() -> bool:
        return target_port() == want_target and rule_ports() == want_rules

    # the resync period is 60 s; the rest is slack for a busy machine
    wait_for(restored, "the Service's target port and the NetworkPolicy's rule restored", 90)
