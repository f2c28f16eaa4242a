"""Fixtures for tests on a real control plane: the cluster (tests/fixtures/cluster.py) and the
operator with its CRD and the gateways' /stats (tests/fixtures/operator_harness.py)."""

from __future__ import annotations

from tests.fixtures.cluster import gpu_pool, kube_api, kube_cluster, namespace
from tests.fixtures.operator_harness import llmep_crd, operator, start_operator, stats_server, watch

__all__ = [
    "gpu_pool",
    "kube_api",
    "kube_cluster",
    "llmep_crd",
    "namespace",
    "operator",
    "start_operator",
    "stats_server",
    "watch",
]
