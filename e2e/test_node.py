"""A real kubelet node (e2e/node/kubelet.py) in the local control plane, running the gateway
image the way a cluster does.

The kubelet (built from the pinned k8s.io/kubernetes), containerd and runc register a node
beside the control plane; the gateway pod the operator writes (its securityContext, probes,
preStop hook, ServiceAccount and limits) runs from the locally built image, imported into
containerd, on the CNI bridge. It relays a completion to an engine process on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.local.host import needs_root
from e2e.node.kubelet import LocalNode, host_address, image_tags
from e2e.node.scenario import confinement
from scaleserve.dev.cluster import Cluster, cache_dir
from scaleserve.operator.builders import Observed, Owner, PlacedGroup, desired
from scaleserve.operator.builders.naming import GATEWAY_PORT
from scaleserve.operator.builders.security import RUN_AS_USER
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import parse_spec
from tests.fixtures.engines import EngineProcess

pytestmark = [pytest.mark.e2e, pytest.mark.long]

ROOT = Path(__file__).parents[1]
BUILD_TIMEOUT_S = 20 * 60  # cold: the kubelet (a few minutes of Go) and two small images
NAMESPACE = "node-e2e"
GPUS = 2
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    needs_root()
    for argv in (["bash", "e2e/cluster/build.sh", "kubelet"],
                 ["bash", "images/build.sh", "gateway", "pause"]):  # fmt: skip
        subprocess.run(["nice", "-n", "19", *argv], cwd=ROOT, check=True, timeout=BUILD_TIMEOUT_S)
    cluster = Cluster(f"node-{os.getpid()}", die_with_owner=True)
    cluster.up(nodes=0)
    local = LocalNode(cluster)
    try:
        gateway, pause = image_tags(["gateway", "pause"])
        local.start_containerd(pause)
        local.import_images([pause, gateway], cache_dir() / "images")
        local.start_kubelet()
        yield local
    finally:
        local.stop()
        cluster.down()


@pytest.fixture(scope="module")
def host_engine(engine_launcher: Any, tiny_model_dir: Path) -> EngineProcess:
    """An engine process on the host's address: pods reach it over the bridge."""
    engine: EngineProcess = engine_launcher.launch(tiny_model_dir, "--host", "0.0.0.0")
    return engine


def _gateway_pod(image: str, node: str, engine: str) -> dict[str, Any]:
    """The gateway Deployment's pod as the operator writes it, bound to `node`, with a static
    engine address (the node runs no kube-proxy: the pod cannot reach the API's Service)."""
    spec = parse_spec({"model": {"uri": "hf://org/m"}, "layout": {"replicas": 1,
                       "tensorParallel": 1}})  # fmt: skip
    manifests = desired(spec, Observed(Owner("e", NAMESPACE, "u"), [PlacedGroup(Group("g", 1, 1))]))
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    pod_spec = template["spec"]
    (container,) = pod_spec["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    args = container["args"]
    at = args.index("--discovery")
    del args[at : args.index("--routing")]
    args += ["--replicas", engine]
    pod_spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec,
            "metadata": {"name": "gateway", "namespace": NAMESPACE,
                         "labels": template["metadata"].get("labels", {})}}  # fmt: skip


def _wait(what: str, check: Any, timeout_s: float, node: LocalNode) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}:\n{node.log_tail('kubelet', 60)}")


def _pod(node: LocalNode) -> dict[str, Any]:
    status, text = node.cluster.api().request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/gateway")
    return json.loads(text) if status == 200 else {}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_node_registers_and_advertises_gpus(node: LocalNode) -> None:
    api = node.cluster.api()
    node.advertise_gpus(GPUS)
    path = f"/api/v1/nodes/{node.name}"
    status = _wait("nvidia.com/gpu allocatable",
                   lambda: api.get_json(path)["status"].get("allocatable", {}).get(GPU) == str(GPUS)
                   and api.get_json(path)["status"], 60, node)  # fmt: skip
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.33")
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert status["capacity"][GPU] == str(GPUS)


def test_the_gateway_pod_runs_on_the_node_under_the_operators_pod_security(
    node: LocalNode, host_engine: EngineProcess
) -> None:
    api = node.cluster.api()
    (gateway,) = image_tags(["gateway"])
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": NAMESPACE}}, exist_ok=True)  # fmt: skip
    pod = _gateway_pod(gateway, node.name, f"{host_address()}:{host_engine.port}")
    account = pod["spec"]["serviceAccountName"]
    api.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"apiVersion": "v1",
               "kind": "ServiceAccount", "metadata": {"name": account}})  # fmt: skip
    api.create(f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    running = _wait("the gateway pod Ready (its readiness probe)",
                    lambda: _ready(_pod(node)) and _pod(node), 300, node)  # fmt: skip
    pod_ip = running["status"]["podIP"]
    reply = httpx.post(f"http://{pod_ip}:{GATEWAY_PORT}/v1/completions", timeout=60,
                       json={"model": "tiny", "prompt": "hello", "max_tokens": 4})  # fmt: skip
    assert reply.status_code == 200, reply.text
    confined = confinement(node.container_pid("gateway"))
    assert confined.uids == [RUN_AS_USER] * 4
    assert confined.root_read_only
    assert confined.token.count(".") == 2  # a JWT signed by the API server (TokenRequest)
