"""The install path on a real kubelet node: `helm install`, an LLMEndpoint on the CPU engine
image, a streamed answer through the gateway Service, a reshape under load, then nothing left.

The node (e2e/node/: kubelet, containerd, runc, CNI bridge, kube-proxy in iptables mode) sits
beside two kwok GPU nodes; the operator, gateway and engine pods are pinned to it by its
hostname label. Every image is the local build, imported into containerd. The pods run with
the chart's and the operator's securityContext (uid 65532, read-only root) and their own
ServiceAccount tokens: the operator and the gateway reach the API server through the
`kubernetes` Service, the test's client reaches the gateway through its ClusterIP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import openai
import pytest

from e2e.local.endpoints import LocalEndpoint
from e2e.local.host import needs_root
from e2e.local.layout import wait_status, wait_until
from e2e.local.load import Load
from e2e.node.kubelet import LocalNode, host_address, image_tags
from e2e.node.proxy import start_kube_proxy, stop_kube_proxy
from e2e.node.scenario import (
    RELEASE_NAMESPACE,
    ROOT,
    SERVED_NAME,
    Helm,
    chart_values,
    confinement,
    cpu_endpoint,
    timed,
)  # fmt: skip
from scaleserve.dev.cluster import Cluster, cache_dir
from scaleserve.dev.stack import GROUP, PLURAL, VERSION
from scaleserve.dev.watch import wait_endpoint_ready
from scaleserve.operator.builders.naming import GATEWAY_PORT, gateway_name
from scaleserve.operator.builders.security import RUN_AS_USER

# the first test builds the images when they are not cached; the last tears the node down
pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(4200)]
log = logging.getLogger("e2e")

IMAGES = ("pause", "operator", "gateway")
ENGINE_IMAGE = "engine-cpu"
BUILD_TIMEOUT_S = 60 * 60  # cold: the CPU engine image is 7 GB of wheels
GPUS = 4  # 1 x TP2 and its 2 x TP1 successor side by side (make-before-break)
NAMESPACE = "default"
ENDPOINT = "tiny"
READY_TIMEOUT_S = 1800.0  # engine start-up in a container on 2 contended cores


@dataclass
class NodeStack:
    cluster: Cluster
    node: LocalNode
    images: dict[str, str]
    client: Any
    figures: dict[str, float] = field(default_factory=dict)

    def endpoint(self) -> LocalEndpoint:
        return LocalEndpoint(self.client, NAMESPACE, ENDPOINT)

    def gateway_url(self) -> str:
        svc = kubernetes.client.CoreV1Api(self.client).read_namespaced_service(
            gateway_name(ENDPOINT), NAMESPACE
        )
        return f"http://{svc.spec.cluster_ip}:{GATEWAY_PORT}/v1"

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        api = kubernetes.client.CoreV1Api(self.client)
        return list(api.list_namespaced_pod(namespace, label_selector=selector).items)


def _build(figures: dict[str, float], name: str, argv: list[str]) -> None:
    command = ["nice", "-n", "19", *argv]
    timed(figures, name, lambda: subprocess.run(command, cwd=ROOT, check=True,
                                                timeout=BUILD_TIMEOUT_S))  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[NodeStack]:
    needs_root()
    figures: dict[str, float] = {}
    _build(figures, "kubelet_build_s", ["bash", "e2e/cluster/build.sh", "kubelet"])
    # the node imports images from podman's storage: no OCI bundles
    _build(figures, "images_build_s", ["bash", "images/build.sh", "--no-bundle", *IMAGES])
    cluster = Cluster(f"helm-{os.getpid()}", die_with_owner=True)
    node = LocalNode(cluster)
    try:
        # the API server on the host's address: the `kubernetes` Service's endpoint, which pods
        # reach over the bridge (its certificate names that address and the Service's)
        timed(figures, "cluster_s", lambda: cluster.up(
            nodes=2, address=host_address(), service_endpoint=True))  # fmt: skip
        images = dict(zip(IMAGES, image_tags(IMAGES), strict=True))
        node.start_containerd(images["pause"])
        timed(figures, "import_s", lambda: node.import_images(
            list(images.values()), cache_dir() / "images"))  # fmt: skip
        timed(figures, "kubelet_s", node.start_kubelet)
        timed(figures, "kube_proxy_s", lambda: start_kube_proxy(node))
        node.advertise_gpus(GPUS)
        client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        yield NodeStack(cluster, node, images, client, figures)
        client.close()
    finally:
        print(f"\nnode scenario figures (s): {json.dumps(figures)}")
        stop_kube_proxy(node)
        node.stop()
        cluster.down()


@pytest.fixture(scope="module")
def engine_image(stack: NodeStack) -> str:
    """The CPU engine image (7 GB, the tiny model baked in), built and imported on first use."""
    argv = ["bash", "images/build.sh", "--no-bundle", ENGINE_IMAGE]
    _build(stack.figures, "engine_image_build_s", argv)
    (tag,) = image_tags([ENGINE_IMAGE])
    timed(stack.figures, "engine_image_import_s", lambda: stack.node.import_images(
        [tag], cache_dir() / "images"))  # fmt: skip
    return tag


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_helm_install_runs_the_operator_image_on_the_node(stack: NodeStack) -> None:
    helm = Helm(stack.cluster)
    values = chart_values(stack.images["operator"], stack.node.name)
    timed(stack.figures, "helm_install_s", lambda: helm.install(values))
    (pod,) = stack.pods(RELEASE_NAMESPACE, "app.kubernetes.io/component=operator")
    assert _ready(pod)
    assert pod.spec.node_name == stack.node.name
    # it holds the leader Lease: it reached the API server through the `kubernetes` Service
    # with its own token, and its RBAC let it write the Lease
    leases = kubernetes.client.CoordinationV1Api(stack.client)

    def held() -> bool:
        items = leases.list_namespaced_lease(RELEASE_NAMESPACE).items
        return any((item.spec.holder_identity or "").startswith(f"{pod.metadata.name}_")
                   for item in items)  # fmt: skip

    asyncio.run(wait_until(held, "the operator's leader Lease", 120))
    confined = confinement(stack.node.container_pid("operator"))
    assert confined.uids == [RUN_AS_USER] * 4
    assert confined.root_read_only
    assert confined.token.count(".") == 2


def test_a_cpu_endpoint_on_the_node_streams_through_the_gateway_service(
    stack: NodeStack, engine_image: str
) -> None:
    body = cpu_endpoint(ENDPOINT, engine_image, stack.images["gateway"], stack.node.name)
    kubernetes.client.CustomObjectsApi(stack.client).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, body
    )
    timed(stack.figures, "apply_to_ready_s", lambda: wait_endpoint_ready(
        stack.client, NAMESPACE, ENDPOINT, READY_TIMEOUT_S, log.info))  # fmt: skip
    pods = stack.endpoint().pods()
    assert pods
    assert all(p.spec.node_name == stack.node.name for p in pods)
    client = openai.OpenAI(base_url=stack.gateway_url(), api_key="unused", max_retries=0)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=16,
        stream=True,
    )  # fmt: skip
    first, text, finish = 0.0, "", None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content and not first:
                first = time.monotonic() - started
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    stack.figures["first_token_s"] = round(first, 2)
    assert text
    assert finish in ("stop", "length")
    engine = confinement(stack.node.container_pid("engine"))
    assert engine.uids == [RUN_AS_USER] * 4
    assert engine.root_read_only
    assert engine.token == ""  # engines call no API: no token mounted


@pytest.mark.asyncio
async def test_reshape_to_2x_tp1_under_light_load_loses_no_request(stack: NodeStack) -> None:
    ep = stack.endpoint()
    async with Load(stack.gateway_url(), max_tokens=32) as load:
        await load.set_clients(2)
        await asyncio.sleep(5)
        started = time.monotonic()
        await asyncio.to_thread(
            kubernetes.client.CustomObjectsApi(stack.client).patch_namespaced_custom_object,
            GROUP, VERSION, NAMESPACE, PLURAL, ENDPOINT,
            {"spec": {"layout": {"replicas": 2, "tensorParallel": 1}}},
        )  # fmt: skip
        done = await wait_status(ep, "2x1", READY_TIMEOUT_S)
        stack.figures["reshape_s"] = round(done - started, 1)
        # the TP2 group, deleted, drains its streams (preStop, drain timeout): under load too
        await wait_until(lambda: len(ep.pods("engine")) == 2, "the TP2 engine pod gone", 300)
        stack.figures["reshape_drained_s"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(5)  # requests on the new group alone
        await load.set_clients(0, wait=True)
    print(f"\nreshape on the node: {dict(load.counts())}")
    assert load.problems(kinds=("failed", "truncated", "error_event")) == []
    assert load.counts()["complete"] >= 10
    engines = ep.pods("engine")
    assert len(engines) == 2
    assert all(p.spec.node_name == stack.node.name for p in engines)


def test_delete_and_uninstall_leave_nothing(stack: NodeStack) -> None:
    stack.endpoint().delete(timeout_s=300)
    Helm(stack.cluster).uninstall()
    core = kubernetes.client.CoreV1Api(stack.client)

    def gone() -> bool:
        on_node = core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={stack.node.name}"
        )
        return not on_node.items and not stack.node.ctr("tasks", "ls", "-q").split()

    asyncio.run(wait_until(gone, "no pod and no container on the node", 180))
    managed = "app.kubernetes.io/managed-by=scaleserve-operator"
    apps = kubernetes.client.AppsV1Api(stack.client)
    assert not apps.list_namespaced_stateful_set(NAMESPACE, label_selector=managed).items
    assert not apps.list_namespaced_deployment(NAMESPACE, label_selector=managed).items
    assert not core.list_namespaced_service(NAMESPACE, label_selector=managed).items
    assert not apps.list_namespaced_deployment(RELEASE_NAMESPACE).items
    rbac = kubernetes.client.RbacAuthorizationV1Api(stack.client)
    release = "app.kubernetes.io/instance=scaleserve"
    assert not rbac.list_cluster_role(label_selector=release).items
    assert not rbac.list_cluster_role_binding(label_selector=release).items
