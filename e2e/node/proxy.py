"""kube-proxy for the local node: Service addresses (ClusterIPs) routed by iptables on this host.

Without it pods cannot reach the API server through the `kubernetes` Service (the address every
in-cluster client uses) and nobody reaches a ClusterIP. kube-proxy is built from the same pinned
k8s.io/kubernetes as the kubelet (`e2e/cluster/build.sh kubelet`) and runs in iptables mode as
the user ``system:kube-proxy`` (bound to ``system:node-proxier`` by the API server's default
RBAC). It is told to leave the host's sysctls alone (conntrack table and timeouts, localhost
NodePorts), and `stop` removes the rules that route Services (``kube-proxy --cleanup``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from e2e.node.kubelet import POD_SUBNET, LocalNode, client_certificate, kubeconfig
from scaleserve.dev import processes
from scaleserve.dev.cluster import binaries_dir, free_port


def proxy_config(
    node: str, kubeconfig_file: Path, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig_file)},
        "hostnameOverride": node,
        # traffic from outside the pods' network to a Service is masqueraded, so replies from
        # the pod come back through this host
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # zeros keep the host's conntrack settings; no route_localnet for localhost NodePorts
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False},
    }


def start_kube_proxy(node: LocalNode, timeout_s: float = 60) -> None:
    state = node.cluster.load_state()
    if state is None:
        raise RuntimeError(f"cluster {node.cluster.name} is not running")
    crt, key = client_certificate(node.cluster, "system:kube-proxy", "system:node-proxier",
                                  node.dir / "proxy")  # fmt: skip
    access = node.dir / "proxy.kubeconfig"
    access.write_text(kubeconfig(state.server, node.cluster.pki.ca_crt, crt, key))
    healthz = free_port()
    config = node.dir / "proxy.json"
    config.write_text(json.dumps(proxy_config(node.name, access, healthz, free_port())))
    argv = [str(binaries_dir() / "kube-proxy"), "--config", str(config), "--v", "2"]
    proc = processes.spawn(argv, env=dict(os.environ), log=node.dir / "logs/kube-proxy.log")
    (node.dir / "kube-proxy.pid").write_text(str(proc.pid))

    def synced() -> bool:
        # /healthz answers 200 once the rules of the first full sync are in place
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{healthz}/healthz", timeout=2).status_code == 200
        return False

    node.wait("kube-proxy's first sync", synced, timeout_s, proc)


def stop_kube_proxy(node: LocalNode) -> None:
    """Stop it, then remove its Service rules (it leaves them on exit by design)."""
    node.stop_pidfile("kube-proxy.pid", 10)
    binary = binaries_dir() / "kube-proxy"
    if binary.exists():
        subprocess.run([str(binary), "--cleanup", "--v", "0"], capture_output=True, check=False,
                       timeout=120)  # fmt: skip
