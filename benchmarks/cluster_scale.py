"""Scale of the local control plane: 1,000 fake GPU nodes and 1,000 single-GPU pods.

Starts its own cluster (`scaleserve.dev.cluster`), creates the nodes and the pods, and reports
the time until every node is Ready, every pod is scheduled and every pod is Running, with the
resident memory of each control-plane process. Writes benchmarks/results/cluster_scale.json.

    python benchmarks/cluster_scale.py [--nodes 1000] [--pods 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scaleserve.dev.cluster import CLUSTER_DIR, Cluster
from scaleserve.dev.kubeapi import KubeApi

RESULTS = Path(__file__).resolve().parent / "results" / "cluster_scale.json"
NAMESPACE = "scale"


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "scale"}},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "engine",
                    "image": "scaleserve/engine:bench",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def _count(api: KubeApi, field_selector: str) -> int:
    path = f"/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector={field_selector}"
    return len(api.get_json(path)["items"])


def _wait(what: str, check: Any, timeout_s: float, rss: dict[str, int], cluster: Cluster) -> float:
    start = time.monotonic()
    while not check():
        for name, value in cluster.rss_bytes().items():
            rss[name] = max(rss.get(name, 0), value)
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def _versions() -> dict[str, str]:
    lines = (CLUSTER_DIR / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def run(nodes: int, pods: int, parallelism: int, timeout_s: float) -> dict[str, Any]:
    cluster = Cluster("bench-scale")
    cluster.down()
    load_start = os.getloadavg()
    t0 = time.monotonic()
    state = cluster.up(nodes=0)
    start_s = time.monotonic() - t0
    peak: dict[str, int] = {}
    try:
        api = cluster.api(state)
        t = time.monotonic()
        cluster.create_nodes(range(nodes), api=api, parallelism=parallelism)
        nodes_created_s = time.monotonic() - t
        nodes_ready_s = nodes_created_s + _wait(
            f"{nodes} Ready nodes",
            lambda: cluster.ready_node_count(api) >= nodes,
            timeout_s, peak, cluster,
        )  # fmt: skip
        api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        _wait(
            "the namespace's default ServiceAccount",
            lambda: api.request(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
            )[0] == 200,
            60, peak, cluster,
        )  # fmt: skip

        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            list(pool.map(
                lambda i: api.create(f"/api/v1/namespaces/{NAMESPACE}/pods", _pod(f"p-{i}")),
                range(pods),
            ))  # fmt: skip
        pods_created_s = time.monotonic() - t
        scheduled_s = pods_created_s + _wait(
            "all pods scheduled",
            lambda: _count(api, "spec.nodeName=") == 0, timeout_s, peak, cluster,
        )  # fmt: skip
        running_s = scheduled_s + _wait(
            "all pods Running",
            lambda: _count(api, "status.phase!=Running") == 0, timeout_s, peak, cluster,
        )  # fmt: skip
        rss = cluster.rss_bytes()
        for name, value in rss.items():
            peak[name] = max(peak.get(name, 0), value)
    finally:
        cluster.down()
    mib = 1 << 20
    return {
        "nodes": nodes,
        "gpus_per_node": 8,
        "pods": pods,
        "gpus_per_pod": 1,
        "cluster_start_s": round(start_s, 2),
        "nodes_created_s": round(nodes_created_s, 2),
        "nodes_ready_s": round(nodes_ready_s, 2),
        "pods_created_s": round(pods_created_s, 2),
        "pods_all_scheduled_s": round(scheduled_s, 2),
        "pods_all_running_s": round(running_s, 2),
        "rss_mib_at_end": {k: round(v / mib, 1) for k, v in sorted(rss.items())},
        "rss_mib_peak": {k: round(v / mib, 1) for k, v in sorted(peak.items())},
        "rss_mib_total_at_end": round(sum(rss.values()) / mib, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        # other work on the machine slows every figure above; compare runs at similar load
        "load_average_1_5_15m": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "client_parallelism": parallelism,
        "versions": _versions(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=16, help="concurrent API requests")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.nodes, args.pods, args.parallelism, args.timeout)
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
