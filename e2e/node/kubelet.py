"""A real node for the local control plane: kubelet, containerd and runc, CNI bridge networking.

The kubelet is built from the pinned k8s.io/kubernetes (`e2e/cluster/build.sh kubelet`), and
containerd (1.6), runc and the CNI plugins come from Debian's packages. containerd runs with
its own root, state and socket under the node's folder (the machine's /var/lib/containerd is
left alone); its CRI plugin names the locally built sandbox image (images/pause/) and the CNI
bridge and host-local plugins (a /24 of its own). The kubelet registers with the cluster's
kube-apiserver under a node client certificate (``system:node:<name>``, group
``system:nodes``, signed by the cluster's CA) and uses the cgroupfs driver: the cgroups here
are v1 with a v2 ``unified`` mount, and there is no systemd. Images come from the local
builds (images/build.sh), loaded with ``ctr images import``: no registry.

`nvidia.com/gpu` is not a device here: `advertise` patches it onto the node's status as an
extended resource, which the scheduler counts like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from scaleserve.dev import processes
from scaleserve.dev.cluster import Cluster, binaries_dir, cache_dir, free_port

POD_SUBNET = "10.252.0.0/24"  # the local stack's pod networks take 10.251.0.0/16
BRIDGE = "ssnode0"
NETWORK = "scaleserve-node"  # the CNI network's name, in the comments of its iptables rules
CNI_BIN = Path("/usr/lib/cni")


class NodeError(RuntimeError):
    pass


def install_packages() -> None:
    """containerd and the CNI plugins from Debian's packages, where the machine lacks them
    (runc comes with the image tools, images/build.sh)."""
    if shutil.which("containerd") and (CNI_BIN / "bridge").exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "containerd",
         "containernetworking-plugins"],
    ):  # fmt: skip
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, env=env, timeout=900)


def host_address() -> str:
    """The address of the default route's interface: a kubelet refuses a loopback node IP."""
    routes = json.loads(_run("ip", "-j", "route", "get", "1.1.1.1"))
    return str(routes[0]["prefsrc"])


def _run(*argv: str | Path, stdin: Any = None, timeout: float = 120) -> str:
    proc = subprocess.run([str(a) for a in argv], stdin=stdin, capture_output=True, text=True,
                          check=False, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise NodeError(f"{' '.join(map(str, argv))}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def client_certificate(cluster: Cluster, user: str, group: str, stem: Path) -> tuple[Path, Path]:
    """A client certificate for `user` in `group`, signed by the cluster's CA (`stem`.crt/.key):
    a kubelet's is ``system:node:<name>`` in ``system:nodes``, as the Node authorizer expects."""
    key, crt, csr = stem.with_suffix(".key"), stem.with_suffix(".crt"), stem.with_suffix(".csr")
    ext = stem.with_suffix(".ext")
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                   "keyEncipherment\nextendedKeyUsage=clientAuth\n")  # fmt: skip
    _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-noenc", "-subj", f"/O={group}/CN={user}", "-keyout", key, "-out", csr)  # fmt: skip
    _run("openssl", "x509", "-req", "-in", csr, "-CA", cluster.pki.ca_crt,
         "-CAkey", cluster.pki.ca_key, "-CAcreateserial", "-days", "30", "-extfile", ext,
         "-out", crt)  # fmt: skip
    return crt, key


def kubeconfig(server: str, ca: Path, crt: Path, key: Path) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "c", "user": "u"}}],
    })  # fmt: skip


def containerd_config(folder: Path, sandbox_image: str) -> str:
    """containerd's config: its own root, state and socket, the CRI plugin on runc with
    cgroupfs, the local sandbox image and the node's CNI folders."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{folder}/containerd/root"
state = "{folder}/containerd/state"
[grpc]
  address = "{folder}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{folder}/containerd/opt"
[{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "runc"}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{folder}/cni/net.d"
"""


def cni_config(folder: Path) -> dict[str, Any]:
    """One bridge with host-local addresses; the host routes to the pods over it."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(folder / "cni" / "ipam")}  # fmt: skip
    bridge = {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
              "hairpinMode": True, "ipam": ipam}  # fmt: skip
    return {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [bridge]}


def kubelet_config(folder: Path, ca: Path, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{folder}/containerd.sock",
        "address": "0.0.0.0",
        "port": port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        # no KUBE-FIREWALL or canary chains on the host: kube-proxy (e2e/node/proxy.py) writes
        # the only rules, and removes them
        "makeIPTablesUtilChains": False,
        "maxPods": 20,
        "serializeImagePulls": False,
        # the images are imported, never pulled: garbage collection must not remove them
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "resolvConf": "/etc/resolv.conf",
    }


@dataclass
class LocalNode:
    """One kubelet node of `cluster`, its files under the cluster's folder."""

    cluster: Cluster
    name: str = "cpu-node-0"

    @property
    def dir(self) -> Path:
        return self.cluster.dir / "node"

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    def ctr(self, *args: str | Path, stdin: Any = None, timeout: float = 600) -> str:
        return _run("ctr", "--address", self.socket, "--namespace", "k8s.io", *args,
                    stdin=stdin, timeout=timeout)  # fmt: skip

    def start_containerd(self, sandbox_image: str) -> None:
        install_packages()
        for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        config = self.dir / "containerd.toml"
        config.write_text(containerd_config(self.dir, sandbox_image))
        (self.dir / "cni/net.d/10-scaleserve.conflist").write_text(json.dumps(cni_config(self.dir)))
        proc = processes.spawn(["containerd", "--config", str(config)], env=dict(os.environ),
                               log=self.dir / "logs/containerd.log")  # fmt: skip
        (self.dir / "containerd.pid").write_text(str(proc.pid))
        self.wait("containerd's socket", lambda: self.socket.exists(), 60, proc)

    def import_images(self, images: Sequence[str], storage: Path) -> None:
        """Each `localhost/...` image of the local podman storage, into containerd's k8s.io
        namespace (where the CRI plugin looks)."""
        podman = ["podman", "--root", str(storage / "storage"), "--runroot", str(storage / "run"),
                  "--storage-driver", "overlay"]  # fmt: skip
        for image in images:
            # streamed: the CPU engine image is 7 GB, no need for a copy of it on disk
            save = subprocess.Popen([*podman, "save", "--format", "docker-archive", image],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            try:
                self.ctr("images", "import", "-", stdin=save.stdout, timeout=1800)
            except BaseException:
                save.kill()  # it would wait for a reader forever
                raise
            finally:
                _, error = save.communicate(timeout=120)
            if save.returncode != 0:
                raise NodeError(f"podman save {image}: {error.decode().strip()}")

    def start_kubelet(self, timeout_s: float = 180) -> None:
        state = self.cluster.load_state()
        if state is None:
            raise NodeError(f"cluster {self.cluster.name} is not running")
        crt, key = client_certificate(self.cluster, f"system:node:{self.name}", "system:nodes",
                                      self.dir / "node")  # fmt: skip
        (self.dir / "kubelet.kubeconfig").write_text(
            kubeconfig(state.server, self.cluster.pki.ca_crt, crt, key)
        )
        config = self.dir / "kubelet.json"
        healthz = free_port()
        config.write_text(json.dumps(kubelet_config(self.dir, self.cluster.pki.ca_crt,
                                                    free_port(), healthz)))  # fmt: skip
        argv = [str(binaries_dir() / "kubelet"), "--config", str(config),
                "--kubeconfig", str(self.dir / "kubelet.kubeconfig"),
                "--root-dir", str(self.dir / "kubelet"),
                "--cert-dir", str(self.dir / "kubelet-pki"), "--hostname-override", self.name,
                "--node-ip", host_address(), "--v", "2"]  # fmt: skip
        proc = processes.spawn(argv, env=dict(os.environ), log=self.dir / "logs/kubelet.log")
        (self.dir / "kubelet.pid").write_text(str(proc.pid))
        self.wait("the node Ready", self._ready, timeout_s, proc)

    def advertise_gpus(self, count: int) -> None:
        """`nvidia.com/gpu` as an extended resource patched onto the node's status capacity
        (no device plugin: these machines have no GPU); the kubelet keeps it and derives
        allocatable from it."""
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(count)}]
        client = kubernetes.config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        try:
            kubernetes.client.CoreV1Api(client).patch_node_status(self.name, patch)
        finally:
            client.close()

    def container_pid(self, container: str) -> int:
        """The host pid of the running container named `container` (of any pod)."""
        tasks = {}
        for line in self.ctr("tasks", "ls").splitlines()[1:]:
            task, pid, status = line.split()
            if status == "RUNNING":
                tasks[task] = int(pid)
        for cid in self.ctr("containers", "ls", "-q").split():
            labels = json.loads(self.ctr("containers", "info", cid)).get("Labels") or {}
            if labels.get("io.kubernetes.container.name") == container and cid in tasks:
                return tasks[cid]
        raise NodeError(f"no running container {container!r}")

    def _ready(self) -> bool:
        status, text = self.cluster.api().request("GET", f"/api/v1/nodes/{self.name}")
        if status != 200:
            return False
        conditions = json.loads(text).get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait(self, what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + timeout_s
        log = Path(str(proc.args[0])).name  # type: ignore[index]
        while not check():
            if proc.poll() is not None:
                raise NodeError(f"{log} exited ({proc.returncode}):\n{self.log_tail(log)}")
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what}:\n{self.log_tail(log)}")
            time.sleep(0.5)

    def log_tail(self, name: str, lines: int = 40) -> str:
        return processes.log_tail(self.dir / "logs" / f"{name}.log", lines)

    def stop(self) -> None:
        """The node's pods (deleted, so that the kubelet stops them as it would), the kubelet,
        whatever containers are left, containerd, the shims it left, the mounts under the
        node's folder (network namespaces included), the bridge and its NAT rules."""
        self._delete_pods(timeout_s=60)
        self.stop_pidfile("kubelet.pid", 20)
        if self.socket.exists():
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
                for task in self.ctr("tasks", "ls", "-q", timeout=30).split():
                    with contextlib.suppress(NodeError):
                        self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30)
                        self.ctr("tasks", "delete", "--force", task, timeout=30)
        self.stop_pidfile("containerd.pid", 20)
        for pid in _shims(self.socket):
            processes.stop(pid, 5, group=False)
        _unmount_under(self.dir)
        _remove_pod_cgroups()
        with contextlib.suppress(NodeError):
            _run("ip", "link", "delete", BRIDGE)
        _remove_masquerade_rules()

    def _delete_pods(self, timeout_s: float) -> None:
        with contextlib.suppress(OSError, ValueError, NodeError):
            api = self.cluster.api()
            selector = f"fieldSelector=spec.nodeName%3D{self.name}"
            pods = api.get_json(f"/api/v1/pods?{selector}")["items"]
            for pod in pods:
                meta = pod["metadata"]
                api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}")
            deadline = time.monotonic() + timeout_s
            while pods and time.monotonic() < deadline:
                pods = api.get_json(f"/api/v1/pods?{selector}")["items"]
                time.sleep(1)

    def stop_pidfile(self, name: str, grace_s: float) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int((self.dir / name).read_text())
            if str(self.dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                processes.stop(pid, grace_s)


def _shims(socket: Path) -> list[int]:
    """The containerd-shim processes serving our containerd (their command line names its
    socket): they outlive containerd by design."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and str(socket).encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def _unmount_under(folder: Path) -> None:
    """Lazily unmount whatever the kubelet and containerd mounted under `folder`, deepest
    first (volumes, rootfs overlays, sandbox /dev/shm)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(f"{folder}/"):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_masquerade_rules() -> None:
    """The bridge plugin's NAT rules of sandboxes whose CNI DEL never ran (pods still there when
    containerd stopped): a POSTROUTING rule commented with the network's name, jumping to a
    chain of the sandbox's own."""
    with contextlib.suppress(NodeError):
        for line in _run("iptables-save", "-t", "nat").splitlines():
            if not line.startswith("-A POSTROUTING") or f'name: \\"{NETWORK}\\"' not in line:
                continue
            chain = line.rsplit("-j ", 1)[1].strip()
            rule = shlex.split(line)[1:]  # what follows -A, comment unquoted
            for argv in (["-D", *rule], ["-F", chain], ["-X", chain]):
                subprocess.run(["iptables", "-t", "nat", *argv], capture_output=True, check=False)


def _remove_pod_cgroups() -> None:
    """The kubelet's `kubepods` cgroups in every v1 hierarchy, deepest first (empty once the
    containers are gone; a leftover tree would hold the next node's QoS settings)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for folder in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def image_tags(names: Sequence[str]) -> list[str]:
    """The tags images/build.sh recorded for `names` (``$CACHE/images/<name>.image``)."""
    folder = cache_dir() / "images"
    return [(folder / f"{name}.image").read_text().strip() for name in names]
