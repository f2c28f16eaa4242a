"""charts/scaleserve on a real control plane: install, upgrade, uninstall, and its RBAC in use.

The chart's operator pod lands on a kwok node (kwok plays its lifecycle, nothing runs); to check
that the chart's RBAC is enough for what the operator really does, the operator runs as a local
process authenticated as the chart's ServiceAccount (a token from the TokenRequest API).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import GpuPool, KubeCluster, wait_for
from tests.fixtures.endpoints import create_endpoint, ready_at, wait_status
from tests.fixtures.operator_harness import OperatorProcess, StartOperator, StatsServer, kubectl

pytestmark = pytest.mark.control_plane

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "scaleserve"
RELEASE = "scaleserve"
CRD = "llmendpoints.scaleserve.io"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
LEADER_ELECTION = "scaleserve-operator-leader-election"

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    from scaleserve.dev.cluster import binaries_dir

    path = binaries_dir() / "helm"
    if not path.is_file():
        pytest.fail(f"helm is not built ({path}): run `make cluster-binaries`")
    return path


@pytest.fixture
def helm(helm_binary: Path, kube_cluster: KubeCluster, tmp_path: Path) -> Helm:
    """helm(*args) against the test cluster, with its own config and cache folders."""
    home = tmp_path / "helm"
    env = {
        **kube_cluster.kubectl_env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(helm_binary), *args], env=env, capture_output=True, text=True, timeout=240
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


def _values(tmp_path: Path, pool: GpuPool, **extra: Any) -> Path:
    """Values placing the operator pod on the test's kwok pool."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({**pool.pod_placement(), **extra}))
    return path


def _get(cluster: KubeCluster, *args: str) -> list[dict[str, Any]]:
    out = kubectl(cluster, "get", *args, "-o", "json").stdout
    data = json.loads(out)
    return list(data.get("items", [data]))


def _names(cluster: KubeCluster, kind: str, namespace: str | None) -> list[str]:
    where = ["-n", namespace] if namespace else []
    return sorted(i["metadata"]["name"] for i in _get(cluster, kind, *where, "-l", INSTANCE))


def _operator_pods(cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    selector = f"{INSTANCE},app.kubernetes.io/component=operator"
    return _get(cluster, "pods", "-n", namespace, "-l", selector)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _cluster_objects(cluster: KubeCluster, namespace: str) -> list[str]:
    """This release's ClusterRoles and ClusterRoleBindings."""
    names = []
    for kind in ("clusterroles", "clusterrolebindings"):
        for item in _get(cluster, kind, "-l", INSTANCE):
            if item["metadata"]["name"].startswith(f"{namespace}-"):
                names.append(f"{kind}/{item['metadata']['name']}")
    return sorted(names)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    """The operator container's environment."""
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def _can_i(cluster: KubeCluster, verb: str, sa: str, namespace: str) -> str:
    """Whether `sa` may `verb` StatefulSets in `namespace`: "yes" or "no"."""
    result = kubectl(cluster, "auth", "can-i", verb, "statefulsets.apps", "--as", sa,
                     "-n", namespace, check=False)  # fmt: skip
    return result.stdout.strip()


def _assert_installed(cluster: KubeCluster, namespace: str, pool: GpuPool, sa: str) -> None:
    """The release's objects, two Ready operator pods on the pool, cluster-wide defaults."""
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    assert _names(cluster, "deployments", namespace) == ["scaleserve-operator"]
    assert _names(cluster, "serviceaccounts", namespace) == ["scaleserve-operator"]
    assert _names(cluster, "services", namespace) == ["scaleserve-operator"]
    # leader election among the replicas: a Lease in the release namespace
    assert _names(cluster, "roles", namespace) == [LEADER_ELECTION]
    assert _names(cluster, "rolebindings", namespace) == [LEADER_ELECTION]
    cluster_name = f"{namespace}-scaleserve-operator"[:63].rstrip("-")
    assert _cluster_objects(cluster, namespace) == [
        f"clusterrolebindings/{cluster_name}",
        f"clusterroles/{cluster_name}",
    ]
    pods = _operator_pods(cluster, namespace)
    assert len(pods) == 2  # a leader and a standby
    assert all(p["spec"]["nodeName"] in pool.nodes and _ready(p) for p in pods)
    env = _env(pods[0])
    assert env["SCALESERVE_OPERATOR_NAMESPACES"] == ""
    assert env["SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S"] == "10"
    assert env["SCALESERVE_OPERATOR_LEADER_LEASE"] == f"{namespace}/scaleserve-operator"
    assert _can_i(cluster, "create", sa, "default") == "yes"


def _assert_upgraded_to_namespace_scope(
    cluster: KubeCluster, namespace: str, pool: GpuPool, sa: str, helm: Helm
) -> None:
    """Revision 2 deployed, a Role for the namespace, the pods rolled, writes only there."""
    status = json.loads(helm("status", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert status["version"] == 2
    assert status["info"]["status"] == "deployed"
    assert _names(cluster, "roles", namespace) == ["scaleserve-operator", LEADER_ELECTION]
    assert _names(cluster, "rolebindings", namespace) == ["scaleserve-operator", LEADER_ELECTION]

    def rolled() -> list[dict[str, Any]]:
        pods = [p for p in _operator_pods(cluster, namespace)
                if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        env = [_env(p) for p in pods]
        done = len(pods) == 2 and all(e["SCALESERVE_OPERATOR_NAMESPACES"] == namespace for e in env)
        return pods if done and all(_ready(p) for p in pods) else []

    pods = wait_for(rolled, "the upgraded operator pods", timeout_s=90)
    assert all(p["spec"]["nodeName"] in pool.nodes for p in pods)
    for can_i, where, expected in [
        ("create", namespace, "yes"),
        ("create", "default", "no"),  # writes only where it watches now
        ("list", "default", "yes"),  # placement reads pods and StatefulSets everywhere
    ]:
        assert _can_i(cluster, can_i, sa, where) == expected, (can_i, where)


def _assert_uninstalled(cluster: KubeCluster, namespace: str, helm: Helm) -> None:
    for kind in ("deployments", "serviceaccounts", "services", "roles", "rolebindings"):
        assert _names(cluster, kind, namespace) == [], kind
    assert _cluster_objects(cluster, namespace) == []
    wait_for(lambda: not _operator_pods(cluster, namespace), "operator pod gone", 60)
    # the CRD stays: removing it would delete every LLMEndpoint in the cluster
    assert _get(cluster, "crd", CRD)
    assert helm("status", RELEASE, "-n", namespace, check=False).returncode != 0


def test_install_upgrade_and_uninstall_leave_the_expected_objects(
    kube_cluster: KubeCluster, namespace: str, gpu_pool: Any, helm: Helm, tmp_path: Path
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    values = _values(tmp_path, pool)
    sa = f"system:serviceaccount:{namespace}:scaleserve-operator"
    # the operator's pods pass the `restricted` Pod Security Standard (helm --wait needs them)
    kubectl(kube_cluster, "label", "namespace", namespace,
            "pod-security.kubernetes.io/enforce=restricted")  # fmt: skip
    helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(values), "--wait",
         "--timeout", "120s")  # fmt: skip
    _assert_installed(kube_cluster, namespace, pool, sa)

    # upgrade: watch only the release namespace, reconcile faster
    helm("upgrade", RELEASE, str(CHART), "-n", namespace, "-f", str(values),
         "--set", "operator.scope=namespace", "--set", "operator.reconcileIntervalSeconds=3",
         "--wait", "--timeout", "120s")  # fmt: skip
    _assert_upgraded_to_namespace_scope(kube_cluster, namespace, pool, sa, helm)

    helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s")
    _assert_uninstalled(kube_cluster, namespace, helm)


# --- the operator's real API calls under the chart's RBAC -----------------------------------


def _token_kubeconfig(cluster: KubeCluster, namespace: str, sa: str, path: Path) -> Path:
    token = kubectl(cluster, "create", "token", sa, "-n", namespace, "--duration", "1h")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token.stdout.strip()}}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def operator_as(
    kube_cluster: KubeCluster, namespace: str, start_operator: StartOperator, tmp_path: Path
) -> Callable[[str], OperatorProcess]:
    """operator_as(serviceaccount): `scaleserve operator` on the test's namespace with that
    ServiceAccount's identity only."""

    def start(sa: str) -> OperatorProcess:
        config = _token_kubeconfig(kube_cluster, namespace, sa, tmp_path / "sa.kubeconfig")
        identity = KubeCluster(kubeconfig=config, server=kube_cluster.server, started_here=False)
        # elected as the chart's pods are: its Lease is written under the chart's RBAC too
        lease = ("--leader-lease", f"{namespace}/scaleserve-operator")
        return start_operator(sa, *lease, cluster=identity)

    return start


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_the_charts_rbac_is_enough_for_a_full_reshape(
    kube_cluster: KubeCluster,
    kube_api: Any,
    llmep_crd: str,
    namespace: str,
    gpu_pool: Any,
    helm: Helm,
    operator_as: Callable[[str], OperatorProcess],
    stats_server: StatsServer,
    tmp_path: Path,
    scope: str,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    values = _values(tmp_path, pool, operator={"scope": scope})
    helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(values))
    try:
        op = operator_as("scaleserve-operator")
        stats_server.set(namespace, "chat", 4.0)
        spec = {
            "model": {"uri": "hf://org/tiny-llama"},
            "autoscaling": {
                "gpuBudget": 8, "surgeGPUs": 8, "tensorParallelCandidates": [8, 1],
                "concurrencyThresholds": [64], "windowSeconds": 2, "cooldownSeconds": 2,
            },
            **pool.pod_placement(),
        }  # fmt: skip
        create_endpoint(kube_api, namespace, "chat", spec)
        wait_status(kube_api, namespace, "chat", ready_at("1x8"), "1x8 Ready", timeout_s=90, op=op)
        # a reshape creates, deletes and pins groups and posts events: every call the operator makes
        stats_server.set(namespace, "chat", 100.0)
        wait_status(kube_api, namespace, "chat", ready_at("8x1"), "8x1 Ready", timeout_s=120, op=op)
        assert op.alive()
        refused = [
            line
            for line in op.tail(100_000).splitlines()
            # (a log line's timestamp may end in ",403": milliseconds, not a status)
            if re.search(r"(?<!,)\b403\b|Forbidden", line)
            # with the cluster-wide chart the operator runs without --namespace and never lists
            # namespaces; run here with one (not to touch other tests' endpoints), kopf tries
            and not (scope == "cluster" and "/api/v1/namespaces ->" in line)
        ]
        assert refused == [], "\n".join(refused)
        reasons = kubectl(kube_cluster, "get", "events", "-n", namespace, "-o", "json").stdout
        assert "GroupDeleted" in reasons  # events were posted with the chart's identity
        # the gateway's Role (endpointslice reads) was granted by the operator: no escalation
        gateway_role = _get(kube_cluster, "role", "chat-gateway", "-n", namespace)[0]
        assert gateway_role["rules"][0]["resources"] == ["endpointslices"]
    finally:
        # the operator (still running) lets go of its finalizer, then the release goes
        kubectl(kube_cluster, "delete", "llmep", "--all", "-n", namespace, "--timeout=30s",
                check=False)  # fmt: skip
        helm("uninstall", RELEASE, "-n", namespace, check=False)
