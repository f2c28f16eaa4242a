"""The LLMEndpoint CRD on a real API server, and the harness the operator tests share.

The operator runs as a subprocess (`scaleserve operator`) against the test cluster's
kubeconfig; gateways' /stats are served by a small HTTP server in the test process that speaks
the /stats contract (docs/contracts.md), and the operator is pointed at it with --stats-url.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scaleserve.dev.cluster import free_port
from tests.fixtures.cluster import KubeCluster, wait_for

pytestmark = pytest.mark.control_plane

ROOT = Path(__file__).parents[2]
CRD_FILE = ROOT / "crds" / "llmendpoints.yaml"
GROUP, VERSION, PLURAL = "scaleserve.io", "v1alpha1", "llmendpoints"
RECONCILE_INTERVAL_S = 0.5
PENDING_GRACE_S = 3.0


def kubectl(
    cluster: KubeCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args],
        env=cluster.kubectl_env(),
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


@pytest.fixture(scope="session")
def llmep_crd(kube_cluster: KubeCluster) -> str:
    """The LLMEndpoint CRD, applied server-side and Established."""
    kubectl(kube_cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl(
        kube_cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{PLURAL}.{GROUP}",
    )
    return f"{PLURAL}.{GROUP}"


# --- /stats served the way gateways serve it ------------------------------------------------


@dataclass
class StatsServer:
    """Serves /stats/<namespace>/<endpoint> with the contract's JSON; set() changes the load."""

    port: int
    loads: dict[tuple[str, str], float] = field(default_factory=dict)
    # the gateways' per-replica report ("replicas" of /stats): requests in flight per engine
    replicas: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # requests a gateway holds while no engine replica is ready (absent unless set)
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    # the gateways' latency report per TP degree ("latency" of /stats; absent unless set)
    latency: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    reads: int = 0

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/stats/{{namespace}}/{{endpoint}}"

    def set(self, namespace: str, endpoint: str, in_flight: float) -> None:
        self.loads[(namespace, endpoint)] = in_flight

    def body(self, namespace: str, endpoint: str) -> dict[str, Any]:
        load = self.loads.get((namespace, endpoint), 0.0)
        body = {
            "in_flight": int(load),
            "in_flight_avg": load,
            "window_s": 2.0,
            "queued": 0,
            "requests_total": 0,
            "replicas": self.replicas.get((namespace, endpoint), []),
        }
        if (namespace, endpoint) in self.held:
            body["held"] = self.held[(namespace, endpoint)]
        if (namespace, endpoint) in self.latency:
            body["latency"] = self.latency[(namespace, endpoint)]
        return body


@pytest.fixture(scope="session")
def stats_server() -> Iterator[StatsServer]:
    state = StatsServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "stats":
                self.send_error(404)
                return
            state.reads += 1
            data = json.dumps(state.body(parts[1], parts[2])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="stats-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the operator as a subprocess -----------------------------------------------------------


@dataclass
class OperatorProcess:
    cluster: KubeCluster
    namespace: str
    stats_url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    reconcile_interval_s: float = RECONCILE_INTERVAL_S
    metrics_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        env = {**self.cluster.kubectl_env(), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "scaleserve", "operator",
                    "--namespace", self.namespace,
                    "--reconcile-interval", str(self.reconcile_interval_s),
                    "--pending-grace", str(PENDING_GRACE_S),
                    "--stats-url", self.stats_url,
                    "--stats-timeout", "1",
                    "--metrics-port", str(self.metrics_port),
                    *self.extra_args,
                ],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """Stop it abruptly (SIGKILL), as a crashed or evicted operator would stop."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The operator's /metrics, parsed: (sample name, labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def operator(
    kube_cluster: KubeCluster,
    llmep_crd: str,
    namespace: str,
    stats_server: StatsServer,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """`scaleserve operator` watching the test's namespace, started and stopped per test."""
    handle = OperatorProcess(
        kube_cluster, namespace, stats_server.url_template, tmp_path / "operator.log"
    )
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        if os.environ.get("SCALESERVE_SHOW_OPERATOR_LOG"):
            print(handle.tail(200))


# --- API helpers ----------------------------------------------------------------------------


def endpoint_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMEndpoint",
        "metadata": {"name": name},
        "spec": spec,
    }


def custom(kube_api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api)


def get_endpoint(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = custom(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return result


def create_endpoint(
    kube_api: Any, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = custom(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, endpoint_body(name, spec)
    )
    return result


def wait_status(
    kube_api: Any,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout_s: float = 60.0,
    op: OperatorProcess | None = None,
) -> dict[str, Any]:
    """The first status that passes `check`, seen through a watch: every status the operator
    writes is looked at, so a state that lasts less than a poll interval is not missed."""
    from kubernetes import watch
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    resource_version = ""
    while time.monotonic() < deadline:
        if not resource_version:  # (re)list: the current object, then its changes
            current = get_endpoint(kube_api, namespace, name)
            last = current.get("status") or {}
            if check(last):
                return last
            resource_version = current["metadata"]["resourceVersion"]
        stream = watch.Watch()
        try:
            for event in stream.stream(
                custom(kube_api).list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=max(1, int(deadline - time.monotonic())),
            ):
                obj = event["object"]
                if event["type"] == "ERROR":
                    resource_version = ""
                    break
                resource_version = obj["metadata"]["resourceVersion"]
                last = obj.get("status") or {}
                if check(last):
                    return last
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the version is too old, relist
                raise
            resource_version = ""
        finally:
            stream.stop()
    extra = f"\noperator log:\n{op.tail()}" if op is not None else ""
    pytest.fail(f"timed out waiting for {what}; status: {json.dumps(last, indent=1)}{extra}")


def events(kube_api: Any, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the events about the LLMEndpoint, oldest first."""
    from kubernetes import client

    core: Any = client.CoreV1Api(kube_api)
    selector = f"involvedObject.name={name},involvedObject.kind=LLMEndpoint"
    items: list[Any] = core.list_namespaced_event(namespace, field_selector=selector).items
    items.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [(e.type or "", e.reason or "", e.message or "") for e in items]


def engine_pods(kube_api: Any, namespace: str, name: str) -> list[Any]:
    from kubernetes import client

    return list(
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(
            namespace,
            label_selector=f"scaleserve.io/endpoint={name},app.kubernetes.io/component=engine",
        )
        .items
    )


def pod_gpus(pod: Any) -> int:
    total = 0
    for c in pod.spec.containers:
        limits = (c.resources.limits or {}) if c.resources else {}
        total += int(limits.get("nvidia.com/gpu", 0))
    return total


# --- tests of the CRD itself ----------------------------------------------------------------


def test_the_crd_is_established_with_short_name_and_columns(
    kube_cluster: KubeCluster, llmep_crd: str
) -> None:
    out = kubectl(kube_cluster, "get", "crd", llmep_crd, "-o", "json").stdout
    crd = json.loads(out)
    assert crd["spec"]["names"]["shortNames"] == ["llmep"]
    version = crd["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == [
        "Phase",
        "Layout",
        "Ready",
        "Mode",
        "GPUs",
        "Objectives",
        "Concurrency",
        "URL",
        "Message",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}


def test_kubectl_explain_describes_the_fields(kube_cluster: KubeCluster, llmep_crd: str) -> None:
    out = wait_for(
        lambda: kubectl(kube_cluster, "explain", "llmep.spec.autoscaling", check=False).stdout,
        "kubectl explain to see the published schema",
        timeout_s=30,
    )
    assert "gpuBudget" in out
    assert "GPUs the endpoint's engines use in every layout" in out


def test_the_server_fills_in_defaults(kube_api: Any, llmep_crd: str, namespace: str) -> None:
    created = create_endpoint(
        kube_api,
        namespace,
        "defaults",
        {"model": {"uri": "hf://org/m"}, "autoscaling": {"gpuBudget": 8}},
    )
    spec = created["spec"]
    assert spec["autoscaling"]["tensorParallelCandidates"] == [8, 1]
    assert spec["autoscaling"]["concurrencyThresholds"] == [64]
    assert spec["gpu"] == {"resourceName": "nvidia.com/gpu", "perNode": 8}
    assert spec["engine"]["gpuMemoryUtilization"] == 0.9
    assert spec["gateway"]["routing"] == "least-in-flight"
