"""Operator at scale on the local kwok cluster (not a CI test).

Measures, with `scaleserve operator` running as a subprocess:
- apply -> all children created: latency of single LLMEndpoints created one after another
  (p50/p99), i.e. until the engine StatefulSet(s), Services, gateway Deployment and its RBAC,
  PDB and NetworkPolicy all exist;
- N LLMEndpoints (default 1,000) created at once: time until every one has status.phase Ready;
- operator CPU (cores) and resident memory at steady state afterwards.

Targets from the project's issue: p50 <= 1 s, 1,000 converge in <= 5 min, steady-state CPU
<= 0.2 core and memory <= 500 MB. Writes benchmarks/results/operator_scale.json.

    python benchmarks/operator_scale.py [--endpoints 1000] [--latency-samples 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scaleserve.dev.cluster import Cluster
from scaleserve.dev.kubeapi import KubeApi

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "operator_scale.json"
CRD = ROOT / "crds" / "llmendpoints.yaml"
NAMESPACE = "bench"
EP_PATH = f"/apis/scaleserve.io/v1alpha1/namespaces/{NAMESPACE}/llmendpoints"
POLL_S = 3.0  # each poll lists every endpoint: load on the API server under test
CHILDREN = [
    "/api/v1/namespaces/{ns}/serviceaccounts/{name}-gateway",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}-gateway",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}-gateway",
    "/api/v1/namespaces/{ns}/services/{name}-engine",
    "/api/v1/namespaces/{ns}/services/{name}-gateway",
    "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}-engine",
    "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}-engine",
    "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}-g0-tp1",
    "/apis/apps/v1/namespaces/{ns}/deployments/{name}-gateway",
]


def _endpoint(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "scaleserve.io/v1alpha1",
        "kind": "LLMEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://org/model"},
            "layout": {"replicas": 1, "tensorParallel": 1},
        },
    }


def _children_exist(api: KubeApi, name: str) -> bool:
    return all(api.request("GET", p.format(ns=NAMESPACE, name=name))[0] == 200 for p in CHILDREN)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def _writes(api: KubeApi) -> dict[str, float]:
    """The API server's request counters for writes, by verb, resource and subresource
    (`apiserver_request_total`): they count every client, the controllers' writes too."""
    status, text = api.request("GET", "/metrics")
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            kv.split("=", 1) for kv in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        verb = labels.get("verb", "").strip('"')
        if verb not in WRITE_VERBS:
            continue
        sub = labels.get("subresource", '""').strip('"')
        group = labels.get("group", '""').strip('"')
        resource = labels.get("resource", '""').strip('"')
        key = f"{verb} {resource}{'.' + group if group else ''}{'/' + sub if sub else ''}"
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = _cpu_seconds(pid)
        except OSError:
            continue
    return out


def _ready_count(api: KubeApi) -> int:
    """Endpoints with phase Ready; -1 when the API server, busy with the benchmark's own load,
    did not answer in time (the poll goes on)."""
    try:
        items = api.get_json(EP_PATH)["items"]
    except (TimeoutError, OSError):
        return -1
    return sum(1 for i in items if (i.get("status") or {}).get("phase") == "Ready")


def run(
    endpoints: int,
    samples: int,
    interval: float,
    parallelism: int,
    timeout_s: float,
    log: Path,
) -> dict[str, Any]:
    cluster = Cluster("bench-operator")
    cluster.down()
    load_start = os.getloadavg()
    nodes = max(2, (endpoints + samples) // 8 + 2)
    state = cluster.up(nodes=nodes, timeout_s=300)
    operator: subprocess.Popen[bytes] | None = None
    try:
        api = cluster.api(state)
        api.timeout_s = 60.0  # listing 1,000 endpoints on a busy 2-core machine is slow
        env = {**os.environ, "KUBECONFIG": state.kubeconfig}
        subprocess.run(["kubectl", "apply", "--server-side", "-f", str(CRD)], env=env, check=True)
        subprocess.run(
            ["kubectl", "wait", "--for=condition=Established", "crd/llmendpoints.scaleserve.io"],
            env=env,
            check=True,
        )
        api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            operator = subprocess.Popen(
                [sys.executable, "-m", "scaleserve", "operator", "--namespace", NAMESPACE,
                 "--reconcile-interval", str(interval)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        time.sleep(3)

        latencies = []
        for i in range(samples):
            name = f"lat-{i}"
            t = time.monotonic()
            api.create(EP_PATH, _endpoint(name))
            while not _children_exist(api, name):
                if time.monotonic() - t > 60:
                    raise TimeoutError(f"children of {name}")
                time.sleep(0.02)
            latencies.append(time.monotonic() - t)

        pids = {**state.pids, "operator": operator.pid}
        cpu_start, writes_start = _cpu_by_process(pids), _writes(api)
        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            list(pool.map(lambda i: api.create(EP_PATH, _endpoint(f"ep-{i}")), range(endpoints)))
        created_s = time.monotonic() - t
        while _ready_count(api) < endpoints + samples:
            if time.monotonic() - t > timeout_s:
                raise TimeoutError(f"{endpoints} endpoints Ready")
            time.sleep(POLL_S)
        converge_s = time.monotonic() - t
        cpu_end, writes_end = _cpu_by_process(pids), _writes(api)
        converge_cpu = {n: round(cpu_end[n] - cpu_start[n], 1) for n in cpu_end if n in cpu_start}
        per_endpoint = {
            k: round((v - writes_start.get(k, 0.0)) / endpoints, 2)
            for k, v in sorted(writes_end.items())
            if v - writes_start.get(k, 0.0) >= 1
        }

        time.sleep(max(5.0, 2 * interval))  # settle
        cpu0, w0, writes0 = _cpu_seconds(operator.pid), time.monotonic(), _writes(api)
        time.sleep(60)
        cpu = (_cpu_seconds(operator.pid) - cpu0) / (time.monotonic() - w0)
        steady_writes = {
            k: round((v - writes0.get(k, 0.0)) / (endpoints + samples), 3)
            for k, v in sorted(_writes(api).items())
            if v - writes0.get(k, 0.0) >= 1
        }
        rss = _rss_bytes(operator.pid)
        load_end = os.getloadavg()
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        cluster.down()
    latencies.sort()
    return {
        "endpoints": endpoints,
        "nodes": nodes,
        "reconcile_interval_s": interval,
        "apply_to_children_s": {
            "samples": samples,
            "p50": round(statistics.median(latencies), 3),
            "p99": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
        },
        "create_requests_s": round(created_s, 2),
        "all_ready_s": round(converge_s, 2),
        "converge_cpu_seconds": converge_cpu,
        "converge_writes_per_endpoint": per_endpoint,
        "steady_state_cpu_cores": round(cpu, 3),
        "steady_state_writes_per_endpoint_per_minute": steady_writes,
        "steady_state_rss_mib": round(rss / (1 << 20), 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        # other work on the machine slows every figure above; compare runs at similar load
        "load_average_1_5_15m": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in load_end],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--reconcile-interval", type=float, default=30.0)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(
        args.endpoints,
        args.latency_samples,
        args.reconcile_interval,
        args.parallelism,
        args.timeout,
        args.output.with_suffix(".operator.log.tmp"),
    )
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
