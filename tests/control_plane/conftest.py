"""Fixtures for tests on a real control plane: tests/fixtures/cluster.py."""

from __future__ import annotations

from tests.fixtures.cluster import gpu_pool, kube_api, kube_cluster, namespace

__all__ = ["gpu_pool", "kube_api", "kube_cluster", "namespace"]
