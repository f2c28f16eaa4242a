"""The LLMEndpoint CRD on a real API server: names, printer columns, explain, defaults."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.cluster import KubeCluster, wait_for
from tests.fixtures.endpoints import create_endpoint
from tests.fixtures.operator_harness import kubectl

pytestmark = pytest.mark.control_plane


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
