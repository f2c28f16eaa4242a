"""A local Kubernetes control plane with fake GPU nodes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and the kwok controller as processes on loopback.

The binaries come from `make cluster-binaries` (e2e/cluster/build.sh); nothing is downloaded
here. Each cluster lives in ``$SCALESERVE_CACHE/clusters/<name>/`` (certificates, etcd data,
logs, ``kubeconfig`` and ``state.json``); `down` stops its processes and removes that folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleserve.dev import statefile
from scaleserve.dev.kubeapi import KubeApi
from scaleserve.dev.pki import Pki, make_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "e2e" / "cluster"
# the files whose hash names the binaries' cache folder; keep in step with build.sh
KEY_FILES = (
    "versions.env",
    "tools/helm/go.mod",
    "tools/helm/go.sum",
    "tools/kubernetes/go.mod",
    "tools/kubernetes/go.sum",
    "tools/kwok/go.mod",
    "tools/kwok/go.sum",
)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# stop order: clients first, storage last
STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
SERVICE_CIDR = "10.96.0.0/16"


class ClusterError(RuntimeError):
    pass


def cache_dir() -> Path:
    env = os.environ.get("SCALESERVE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "scaleserve"


def binaries_dir() -> Path:
    """The folder build.sh fills for the checked-out versions."""
    env = os.environ.get("SCALESERVE_CLUSTER_BIN")
    if env:
        return Path(env)
    digest = hashlib.sha256()
    for name in KEY_FILES:
        digest.update((CLUSTER_DIR / name).read_bytes())
    return cache_dir() / "cluster-bin" / digest.hexdigest()[:16]


def require_binaries() -> Path:
    bin_dir = binaries_dir()
    if not (bin_dir / ".complete").is_file():
        raise ClusterError(
            f"control plane binaries are not built ({bin_dir}): run `make cluster-binaries`"
        )
    return bin_dir


def clusters_root() -> Path:
    return cache_dir() / "clusters"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ClusterState:
    name: str
    dir: str
    server: str
    kubeconfig: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_s: float = 0.0
    # set when the processes die with the process that started them (test sessions)
    owner_pid: int = 0


# Popen handles of processes started by this interpreter, kept so that they are reaped (and
# Python does not warn about them) when `down` runs in the same process.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def gpu_node(
    name: str,
    *,
    gpus: int = 8,
    product: str = DEFAULT_GPU_PRODUCT,
    cpu: str = "192",
    memory: str = "2Ti",
    pods: int = 110,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node object kwok manages, with `nvidia.com/gpu` capacity and GPU feature labels."""
    resources = {
        "cpu": cpu,
        "memory": memory,
        "pods": str(pods),
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(gpus),
    }
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"gpu-{gpus}x",
        "type": "kwok",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(gpus),
        **(labels or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


class Cluster:
    """One named local cluster and its folder."""

    def __init__(
        self, name: str = "scaleserve", root: Path | None = None, *, die_with_owner: bool = False
    ) -> None:
        """`die_with_owner`: the processes get SIGTERM when this Python process exits (for test
        sessions); otherwise they outlive it until `down`."""
        self.name = name
        self.die_with_owner = die_with_owner
        self.dir = (root or clusters_root()) / name
        self.state_file = self.dir / "state.json"
        self.kubeconfig = self.dir / "kubeconfig"
        self.pki = Pki(self.dir / "pki")
        self.logs = self.dir / "logs"

    # ----------------------------------------------------------------- state
    def load_state(self) -> ClusterState | None:
        return statefile.load(self.state_file, ClusterState)

    def _save_state(self, state: ClusterState) -> None:
        statefile.save(self.state_file, state)

    def api(self, state: ClusterState | None = None) -> KubeApi:
        state = state or self.load_state()
        if state is None:
            raise ClusterError(f"cluster {self.name!r} is not running")
        return KubeApi(state.server, self.pki.ca_crt, self.pki.admin_crt, self.pki.admin_key)

    def _owned(self, pid: int) -> bool:
        """Whether `pid` is still a live process of this cluster. A child of this interpreter
        says so itself (its pid cannot be reused before it is reaped, and its command line reads
        empty for a moment after exec); any other pid counts while its command line names our
        folder, so a recycled pid is never signalled."""
        child = _CHILDREN.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del _CHILDREN[pid]
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
        return not zombie and str(self.dir).encode() in cmdline

    def running(self) -> dict[str, bool]:
        state = self.load_state()
        if state is None:
            return {}
        return {name: self._owned(pid) for name, pid in state.pids.items()}

    # ------------------------------------------------------------ processes
    def _spawn(self, state: ClusterState, name: str, argv: Sequence[str | Path]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
                preexec_fn=_die_with_parent_hook() if self.die_with_owner else None,
            )
        _CHILDREN[proc.pid] = proc
        state.pids[name] = proc.pid
        self._save_state(state)

    def _check_alive(self, state: ClusterState, names: Iterable[str]) -> None:
        for name in names:
            pid = state.pids[name]
            child = _CHILDREN.get(pid)
            if self._owned(pid):
                continue
            code = child.returncode if child is not None else None
            if code is None:
                how = "gone"
            elif code < 0:
                how = f"killed by {signal.Signals(-code).name}"
            else:
                how = f"exit status {code}"
            raise ClusterError(f"{name} exited during start-up ({how}):\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait(
        self, what: str, check: Any, timeout_s: float, state: ClusterState, watch: Sequence[str]
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if check():
                return
            self._check_alive(state, watch)
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(0.2)

    # ------------------------------------------------------------------- up
    def up(
        self,
        nodes: int = 2,
        gpus_per_node: int = 8,
        timeout_s: float = 120.0,
        *,
        address: str = "127.0.0.1",
        service_endpoint: bool = False,
    ) -> ClusterState:
        """Start the control plane (or return the running one) with `nodes` fake GPU nodes.

        `address`: where kube-apiserver listens and the kubeconfig points (loopback, or a local
        stack's end of its pod network's veth, so that pods in that namespace reach it too).
        `service_endpoint`: the API server publishes `address` as the `kubernetes` Service's
        endpoint, as on any cluster (a routable address: a kubelet node's pods reach the API
        server through that Service and kube-proxy); off, the Service has no endpoint."""
        state = self.load_state()
        if state is not None:
            alive = self.running()
            if alive and all(alive.values()) and self.api(state).ready():
                return state
            self.down()  # a partial or stale cluster: start over
        bin_dir = require_binaries()
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            state = self._start(bin_dir, timeout_s, address, service_endpoint)
            api = self.api(state)
            self.create_nodes(range(nodes), gpus=gpus_per_node, api=api)
            self.wait_nodes_ready(nodes, timeout_s, state)
            self._wait(
                "the default ServiceAccount (controller-manager)",
                lambda: (
                    api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
                    == 200
                ),
                timeout_s,
                state,
                BINARIES,
            )
        except BaseException:
            self.down(keep_logs_on_error=True)
            raise
        state.ready_s = round(time.monotonic() - started, 2)
        self._save_state(state)
        return state

    def _start(
        self, bin_dir: Path, timeout_s: float, address: str, service_endpoint: bool
    ) -> ClusterState:
        pki = make_pki(self.pki.dir, [address])
        state = self._new_state(address)
        self.kubeconfig.write_text(kubeconfig_text(self.name, state.server, pki))
        self._save_state(state)
        etcd_url = self._spawn_etcd(state, bin_dir)
        self._spawn_apiserver(state, bin_dir, pki, etcd_url, address, service_endpoint)
        self._wait(
            "kube-apiserver /readyz",
            self.api(state).ready,
            timeout_s,
            state,
            ["etcd", "kube-apiserver"],
        )
        self._spawn_controller_manager(state, bin_dir, pki)
        self._spawn_scheduler(state, bin_dir)
        self._spawn_kwok(state, bin_dir)
        # a process refusing its flags exits at once: report it with its log now rather than
        # as a timeout on nodes later
        time.sleep(0.3)
        self._check_alive(state, BINARIES)
        return state

    def _new_state(self, address: str) -> ClusterState:
        ports = {name: free_port() for name in ("etcd", "etcd-peer", "kwok")}
        ports["apiserver"] = free_port(address)
        return ClusterState(
            name=self.name,
            dir=str(self.dir),
            server=f"https://{address}:{ports['apiserver']}",
            kubeconfig=str(self.kubeconfig),
            ports=ports,
            started_at=time.time(),
            owner_pid=os.getpid() if self.die_with_owner else 0,
        )

    def _spawn_etcd(self, state: ClusterState, bin_dir: Path) -> str:
        """Start etcd; its client URL."""
        etcd_url = f"http://127.0.0.1:{state.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        self._spawn(state, "etcd", [
            bin_dir / "etcd", "--name", "default", "--data-dir", self.dir / "etcd",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(8 << 30), "--log-level", "warn",
        ])  # fmt: skip
        return etcd_url

    def _spawn_apiserver(
        self,
        state: ClusterState,
        bin_dir: Path,
        pki: Pki,
        etcd_url: str,
        address: str,
        service_endpoint: bool,
    ) -> None:
        self._spawn(state, "kube-apiserver", [
            bin_dir / "kube-apiserver", "--etcd-servers", etcd_url,
            "--bind-address", address, "--advertise-address", address,
            "--secure-port", str(state.ports["apiserver"]),
            "--tls-cert-file", pki.server_crt, "--tls-private-key-file", pki.server_key,
            "--client-ca-file", pki.ca_crt,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", pki.sa_pub,
            "--service-account-signing-key-file", pki.sa_key,
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC", "--allow-privileged=true",
            "--endpoint-reconciler-type", "lease" if service_endpoint else "none",
            "--max-requests-inflight", "1000", "--max-mutating-requests-inflight", "500",
            "--profiling=false", "--cert-dir", self.dir / "pki",
        ])  # fmt: skip

    def _spawn_controller_manager(self, state: ClusterState, bin_dir: Path, pki: Pki) -> None:
        self._spawn(state, "kube-controller-manager", [
            bin_dir / "kube-controller-manager", "--kubeconfig", self.kubeconfig,
            "--leader-elect=false", "--secure-port", "0",
            "--service-account-private-key-file", pki.sa_key, "--root-ca-file", pki.ca_crt,
            "--cluster-signing-cert-file", pki.ca_crt, "--cluster-signing-key-file", pki.ca_key,
            "--use-service-account-credentials=false",
            "--kube-api-qps", "500", "--kube-api-burst", "1000",
            "--concurrent-statefulset-syncs", "10",
        ])  # fmt: skip

    def _spawn_scheduler(self, state: ClusterState, bin_dir: Path) -> None:
        config = self.dir / "scheduler.json"
        config.write_text(json.dumps({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig), "qps": 500, "burst": 1000},
            "leaderElection": {"leaderElect": False},
        }))  # fmt: skip
        self._spawn(state, "kube-scheduler", [
            bin_dir / "kube-scheduler", "--config", config, "--secure-port", "0",
        ])  # fmt: skip

    def _spawn_kwok(self, state: ClusterState, bin_dir: Path) -> None:
        self._spawn(state, "kwok", [
            bin_dir / "kwok", "--kubeconfig", self.kubeconfig,
            "--config", CLUSTER_DIR / "kwok.yaml",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", f"{KWOK_NODE_ANNOTATION}=fake",
            "--server-address", f"127.0.0.1:{state.ports['kwok']}",
            "--node-lease-duration-seconds", "40",
        ])  # fmt: skip

    # ---------------------------------------------------------------- nodes
    def create_nodes(
        self,
        indexes: Iterable[int],
        *,
        gpus: int = 8,
        product: str = DEFAULT_GPU_PRODUCT,
        prefix: str = "gpu-node-",
        api: KubeApi | None = None,
        parallelism: int = 8,
    ) -> list[str]:
        """Create fake GPU nodes named ``<prefix><index>``; existing ones are kept."""
        api = api or self.api()
        names = [f"{prefix}{i}" for i in indexes]

        def make(name: str) -> None:
            api.create("/api/v1/nodes", gpu_node(name, gpus=gpus, product=product), exist_ok=True)

        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            list(pool.map(make, names))
        return names

    def ready_node_count(self, api: KubeApi | None = None) -> int:
        api = api or self.api()
        nodes = api.get_json("/api/v1/nodes")["items"]
        count = 0
        for node in nodes:
            for cond in node.get("status", {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    count += 1
        return count

    def wait_nodes_ready(self, count: int, timeout_s: float, state: ClusterState) -> None:
        api = self.api(state)
        self._wait(
            f"{count} Ready nodes", lambda: self.ready_node_count(api) >= count, timeout_s, state,
            BINARIES,
        )  # fmt: skip

    # ----------------------------------------------------------------- down
    def down(self, *, keep_logs_on_error: bool = False, timeout_s: float = 15.0) -> bool:
        """Stop every process of this cluster and remove its folder. True if it existed."""
        state = self.load_state()
        existed = self.dir.exists()
        if state is not None:
            self._stop([state.pids[n] for n in STOP_ORDER if n in state.pids], timeout_s)
        if keep_logs_on_error and self.logs.is_dir():
            saved = self.dir.parent / f"{self.name}.failed-logs"
            subprocess.run(["rm", "-rf", str(saved)], check=False)
            self.logs.rename(saved)
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)
        return existed

    def _stop(self, pids: list[int], timeout_s: float) -> None:
        """SIGTERM all at once (the cluster's data goes with it), SIGKILL after `timeout_s`."""
        live = [pid for pid in pids if self._owned(pid)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while live := [pid for pid in live if self._owned(pid)]:
            if time.monotonic() > deadline:
                for pid in live:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout_s
            time.sleep(0.05)

    # --------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        state = self.load_state()
        if state is None:
            return {"name": self.name, "running": False}
        alive = self.running()
        report: dict[str, Any] = {
            "name": self.name,
            "running": bool(alive) and all(alive.values()),
            "server": state.server,
            "kubeconfig": state.kubeconfig,
            "processes": {n: {"pid": state.pids[n], "alive": a} for n, a in alive.items()},
        }
        if alive.get("kube-apiserver"):
            api = self.api(state)
            report["apiserver_ready"] = api.ready()
            if report["apiserver_ready"]:
                report["ready_nodes"] = self.ready_node_count(api)
        return report

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each live process of this cluster."""
        state = self.load_state()
        out: dict[str, int] = {}
        for name, pid in (state.pids if state else {}).items():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) * 1024
            except OSError:
                continue
        return out


def _die_with_parent_hook() -> Any:
    """A preexec_fn asking Linux for SIGTERM when the parent exits (libc loaded in the parent)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def remove_orphans(prefix: str) -> list[str]:
    """`down` every cluster named `<prefix>*` whose owning process is gone (a test session
    that was killed). Returns their names."""
    removed = []
    for path in sorted(clusters_root().glob(f"{prefix}*")):
        if not path.is_dir():
            continue
        state = Cluster(path.name).load_state()
        if state is None:
            orphan = time.time() - path.stat().st_mtime > 300  # else: still starting
        else:
            orphan = not state.owner_pid or not Path(f"/proc/{state.owner_pid}").exists()
        if orphan:
            Cluster(path.name).down()
            removed.append(path.name)
    return removed


def _b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(name: str, server: str, pki: Pki) -> str:
    """A self-contained kubeconfig (certificates embedded) for the admin user."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {_b64file(pki.ca_crt)}
users:
- name: {name}-admin
  user:
    client-certificate-data: {_b64file(pki.admin_crt)}
    client-key-data: {_b64file(pki.admin_key)}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-admin
current-context: {name}
"""
