"""The install path on the local kubelet node: helm, the chart's values and the LLMEndpoint.

The chart runs the locally built operator image (imported into containerd, never pulled) on
the real node; the endpoint runs the CPU engine image (the tiny model baked in) and the gateway
image there too. The node is chosen by its hostname label, so neither the operator nor the
endpoint's pods can land on the kwok GPU nodes beside it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleserve.dev.cluster import Cluster, binaries_dir

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "scaleserve"
RELEASE = "scaleserve"
RELEASE_NAMESPACE = "scaleserve-system"
HOSTNAME_LABEL = "kubernetes.io/hostname"
MODEL_DIR = "/opt/scaleserve/models/tiny-llama"  # baked into the CPU engine image
SERVED_NAME = "tiny-llama"


@dataclass
class Helm:
    cluster: Cluster

    def __call__(self, *args: str, timeout_s: float = 900) -> str:
        home = self.cluster.dir / "helm"
        # HOME too: helm keeps its API discovery cache in $HOME/.kube (else in the checkout)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home),
               "KUBECONFIG": str(self.cluster.kubeconfig),
               "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
               "HELM_DATA_HOME": str(home / "data")}  # fmt: skip
        proc = subprocess.run([str(binaries_dir() / "helm"), *args], env=env, text=True,
                              capture_output=True, timeout=timeout_s, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def install(self, values: dict[str, Any]) -> None:
        path = self.cluster.dir / "values.json"  # JSON is YAML
        path.write_text(json.dumps(values))
        self("install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
             "--create-namespace", "--values", str(path), "--wait", "--timeout", "10m")  # fmt: skip

    def uninstall(self) -> None:
        self("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "5m")


def chart_values(operator_image: str, node: str) -> dict[str, Any]:
    """The chart's defaults (its securityContext included), with the local operator image on
    `node`: one replica, a short reconcile interval for the test's pace."""
    repository, tag = operator_image.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicas": 1,
        "nodeSelector": {HOSTNAME_LABEL: node},
        "operator": {"reconcileIntervalSeconds": 2},
    }


def cpu_endpoint(name: str, engine_image: str, gateway_image: str, node: str) -> dict[str, Any]:
    """1 x TP2 of the tiny model on `node`'s `nvidia.com/gpu` (each "GPU" a CPU core)."""
    on_node = {HOSTNAME_LABEL: node}
    return {
        "apiVersion": "scaleserve.io/v1alpha1",
        "kind": "LLMEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": MODEL_DIR, "servedName": SERVED_NAME},
            "engine": {"image": engine_image, "dtype": "float32", "maxModelLen": 512,
                       "maxNumSeqs": 16, "drainTimeoutSeconds": 20, "shmSize": "512Mi"},
            "gpu": {"perNode": 4},
            "nodeSelector": on_node,
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "8Gi"}},
            "layout": {"replicas": 1, "tensorParallel": 2},
            "gateway": {"replicas": 1, "image": gateway_image, "nodeSelector": on_node},
        },
    }  # fmt: skip


def timed(figures: dict[str, float], name: str, step: Callable[[], Any]) -> Any:
    """Run `step`, record its duration (seconds) under `name`."""
    started = time.monotonic()
    result = step()
    figures[name] = round(time.monotonic() - started, 1)
    return result


@dataclass
class Confinement:
    """How a container's process runs, read from /proc on the node."""

    uids: list[int]
    root_read_only: bool
    token: str  # the ServiceAccount token it sees ("" when none is mounted)


def confinement(pid: int) -> Confinement:
    status = Path(f"/proc/{pid}/status").read_text()
    uids = [int(u) for u in status.split("Uid:")[1].split("\n")[0].split()]
    mounts = {f[4]: f[5] for f in (line.split() for line in
              Path(f"/proc/{pid}/mountinfo").read_text().splitlines())}  # fmt: skip
    # the projected token, where the container sees it (/var/run is a link to /run in Debian)
    accounts = [m for m in mounts if m.endswith("/secrets/kubernetes.io/serviceaccount")]
    token = Path(f"/proc/{pid}/root{accounts[0]}/token").read_text() if accounts else ""
    return Confinement(uids, "ro" in mounts["/"].split(","), token)
