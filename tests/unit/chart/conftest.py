"""Fixtures for the chart's tests: the helm binary and `helm template` renders.

helm is built with the control plane's binaries (`make cluster-binaries`, e2e/cluster/build.sh)
into the cache folder `scaleserve.dev.cluster.binaries_dir()`; a `helm` on PATH is used
otherwise. Without either, the tests that render the chart are skipped with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[3]
CHART = ROOT / "charts" / "scaleserve"
RELEASE, NAMESPACE = "scaleserve", "scaleserve-system"


@pytest.fixture(scope="session")
def kube_version() -> str:
    """The Kubernetes version of the test control plane (e2e/cluster/versions.env).

    `helm template` renders for it: without a cluster, a helm built from source otherwise
    assumes an old default version and refuses the chart's kubeVersion.
    """
    for line in (ROOT / "e2e" / "cluster" / "versions.env").read_text().splitlines():
        if line.startswith("K8S_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("K8S_VERSION missing from e2e/cluster/versions.env")


def find_helm() -> Path | None:
    from scaleserve.dev.cluster import binaries_dir

    built = binaries_dir() / "helm"
    if built.is_file():
        return built
    found = shutil.which("helm")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def helm() -> Path:
    path = find_helm()
    if path is None:
        pytest.skip("helm is not built: run `make cluster-binaries`")
    return path


def _run(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_helm(*args) -> the finished `helm` process (not checked)."""
    return lambda *args: _run(helm, *args, check=False)


@pytest.fixture(scope="session")
def render(helm: Path, kube_version: str) -> Callable[..., list[dict[str, Any]]]:
    """render(values_file=None, *set_args) -> the manifests `helm template` prints."""

    cache: dict[tuple[str, ...], str] = {}

    def _render(*extra: str) -> list[dict[str, Any]]:
        if extra not in cache:
            args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            cache[extra] = _run(helm, *args, "--kube-version", kube_version, *extra).stdout
        return [d for d in yaml.safe_load_all(cache[extra]) if d]

    return _render
