"""Discovery of the local stack's pods for its Prometheus, as a file_sd file.

Debian's Prometheus is built without Kubernetes service discovery, so this small process stands
in for it: every INTERVAL_S it lists the pods that the chart's PodMonitor selects and writes them
in file_sd format with the `__meta_kubernetes_*` labels kubernetes_sd (role pod) gives: one
target per declared container port, carrying the pod's labels and annotations. The PodMonitor's
relabelings (charts/scaleserve/monitoring/pod-relabelings.yaml) then apply unchanged.

    python -m scaleserve.dev.prometheus_sd <cluster name> <targets.json>
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scaleserve.dev.statefile import write_atomically

# what the chart's PodMonitor selects: the operator's engine and gateway pods
SELECTOR = "app.kubernetes.io/managed-by=scaleserve-operator"
INTERVAL_S = 2.0
META = "__meta_kubernetes_"


def _sanitize(name: str) -> str:
    """A Kubernetes label or annotation key as Prometheus names its meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups for pods (Kubernetes API objects) [pure]."""
    groups = []
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            continue
        meta = pod["metadata"]
        labels = {
            f"{META}namespace": meta["namespace"],
            f"{META}pod_name": meta["name"],
            f"{META}pod_ip": ip,
            f"{META}pod_node_name": pod["spec"].get("nodeName", ""),
            f"{META}pod_phase": pod["status"].get("phase", ""),
        }
        for key, value in (meta.get("labels") or {}).items():
            labels[f"{META}pod_label_{_sanitize(key)}"] = value
        for key, value in (meta.get("annotations") or {}).items():
            labels[f"{META}pod_annotation_{_sanitize(key)}"] = value
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                groups.append(
                    {
                        "targets": [f"{ip}:{port['containerPort']}"],
                        "labels": {
                            **labels,
                            f"{META}pod_container_name": container["name"],
                            f"{META}pod_container_port_name": port.get("name", ""),
                            f"{META}pod_container_port_number": str(port["containerPort"]),
                        },
                    }
                )
    return groups


def write_if_changed(path: Path, groups: list[dict[str, Any]]) -> bool:
    """Replace the file atomically (Prometheus never reads half of it) when its content changes."""
    text = json.dumps(groups, indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    write_atomically(path, text)
    return True


def run(cluster_name: str, path: Path) -> None:
    from scaleserve.dev.cluster import Cluster
    from scaleserve.dev.kubeapi import ApiError

    api = Cluster(cluster_name).api()
    while True:
        try:
            pods = api.get_json(f"/api/v1/pods?labelSelector={SELECTOR}")["items"]
        except (ApiError, OSError) as exc:  # the API server restarting: keep the last file
            print(f"listing pods failed: {exc}", flush=True)
        else:
            write_if_changed(path, pod_targets(pods))
        time.sleep(INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster", help="the local cluster's name (the stack's)")
    parser.add_argument("file", type=Path, help="the file_sd JSON file to keep up to date")
    args = parser.parse_args(argv)
    run(args.cluster, args.file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
