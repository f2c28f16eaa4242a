"""`scaleserve dev up` / `dev down`: the whole system on this machine, GPUs played by CPU cores.

`up` creates the stack's pod network (podnet.py: a network namespace joined to the host by a
veth pair), starts the local control plane (cluster.py, without kwok nodes; kube-apiserver
listens on the host end of the veth, where the pods reach it too), installs the CRD, starts the
local runner (the kubelet of the local nodes, runner.py; pods' processes run inside the
namespace) and the operator as background processes, and optionally applies the sample
LLMEndpoint (e2e/local/llmendpoint.yaml), waits for it with visible progress and streams one
answer through its gateway. Everything lives in ``$SCALESERVE_CACHE/stacks/<name>/`` and
``$SCALESERVE_CACHE/clusters/<name>/``; `down` stops every process of the stack (found by the
marker in their environment, processes.py), removes the namespace, the veth and its route,
and both folders.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaleserve.dev import podnet, processes, statefile
from scaleserve.dev.cluster import REPO_ROOT, Cluster, ClusterError, cache_dir, free_port
from scaleserve.dev.runner import NodeConfig, RunnerConfig

CRD_FILE = REPO_ROOT / "crds" / "llmendpoints.yaml"
SAMPLE_FILE = REPO_ROOT / "e2e" / "local" / "llmendpoint.yaml"
GROUP, VERSION, PLURAL = "scaleserve.io", "v1alpha1", "llmendpoints"
Progress = Callable[[str], None]


class StackError(RuntimeError):
    pass


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class StackState:
    name: str
    dir: str
    marker: str
    kubeconfig: str = ""
    subnets: list[str] = field(default_factory=list)
    podnet: dict[str, Any] = field(default_factory=dict)  # podnet.PodNetwork
    pids: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    gateway_url: str = ""
    operator_metrics_url: str = ""
    prometheus_url: str = ""
    ready_s: float = 0.0


def stacks_root() -> Path:
    return cache_dir() / "stacks"


class Stack:
    """One named local stack: a cluster of the same name plus the runner and the operator."""

    def __init__(self, name: str = "scaleserve") -> None:
        self.name = name
        self.dir = stacks_root() / name
        self.state_file = self.dir / "state.json"
        self.logs = self.dir / "logs"
        self.cluster = Cluster(name)
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:8]
        self.tmp_dir = Path(tempfile.gettempdir()) / f"scaleserve-{digest}"

    # ----------------------------------------------------------------- state
    def load(self) -> StackState | None:
        return statefile.load(self.state_file, StackState)

    def _save(self, state: StackState) -> None:
        statefile.save(self.state_file, state)

    def running(self) -> bool:
        state = self.load()
        return state is not None and all(processes.alive(p) for p in state.pids.values())

    # -------------------------------------------------------------------- up
    def up(
        self,
        *,
        nodes: int = 2,
        gpus_per_node: int = 2,
        reconcile_interval_s: float = 2.0,
        sample: bool = True,
        prometheus: bool = False,
        timeout_s: float = 600.0,
        progress: Progress = _print,
    ) -> StackState:
        if self.load() is not None:
            if self.running():
                raise StackError(f"stack {self.name!r} is already up (`scaleserve dev down`)")
            self.down()
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        state = StackState(self.name, str(self.dir), marker=str(self.dir))
        self._save(state)
        try:
            self._up(state, nodes, gpus_per_node, reconcile_interval_s, timeout_s, progress)
            state.ready_s = round(time.monotonic() - started, 1)
            self._save(state)
            if prometheus:
                self.start_prometheus(state, progress)
            if sample:
                self.apply_sample(state, timeout_s, progress)
        except BaseException:
            progress(f"==> start-up failed; logs: {self.logs}")
            self._dump_logs(progress)
            self.down()
            raise
        return state

    def _up(
        self,
        state: StackState,
        nodes: int,
        gpus: int,
        reconcile_interval_s: float,
        timeout_s: float,
        progress: Progress,
    ) -> None:
        net = self._start_pod_network(state, nodes, progress)
        self._start_control_plane(state, net, timeout_s, progress)
        self._install_crd(timeout_s)
        progress("==> CRD llmendpoints.scaleserve.io installed")
        env = {**os.environ, processes.MARKER_ENV: state.marker, "KUBECONFIG": state.kubeconfig}
        self._start_runner(state, net, nodes, gpus, env, progress)
        self._start_operator(state, reconcile_interval_s, env, progress)

    def _start_pod_network(
        self, state: StackState, nodes: int, progress: Progress
    ) -> podnet.PodNetwork:
        net = podnet.create(self.name, nodes)
        state.podnet, state.subnets = net.to_dict(), net.subnets
        self._save(state)
        progress(
            f"==> pod network: namespace {net.netns}, veth {net.host_if} ({net.host_address}), "
            f"pods in {net.block}"
        )
        return net

    def _start_control_plane(
        self, state: StackState, net: podnet.PodNetwork, timeout_s: float, progress: Progress
    ) -> None:
        progress(f"==> control plane {self.name!r} (etcd, kube-apiserver, controllers, scheduler)")
        try:
            # no kwok nodes: the runner registers the local ones; the API listens on the veth's
            # host end so that pods inside the namespace reach it
            cluster = self.cluster.up(
                nodes=0, timeout_s=min(timeout_s, 180.0), address=net.host_address
            )
        except ClusterError as exc:
            raise StackError(str(exc)) from exc
        state.kubeconfig = cluster.kubeconfig
        self._save(state)
        progress(f"    up in {cluster.ready_s:.1f}s at {cluster.server}")

    def _start_runner(
        self,
        state: StackState,
        net: podnet.PodNetwork,
        nodes: int,
        gpus: int,
        env: dict[str, str],
        progress: Progress,
    ) -> None:
        names = [f"local-{i}" for i in range(nodes)]
        state.nodes = names
        config = RunnerConfig(
            name=self.name,
            kubeconfig=state.kubeconfig,
            pods_dir=str(self.dir / "pods"),
            tmp_dir=str(self.tmp_dir),
            nodes=tuple(NodeConfig(n, gpus, s) for n, s in zip(names, state.subnets, strict=True)),
            netns=net.netns,
        )
        config.dump(self.dir / "runner.json")
        runner = processes.spawn(
            [sys.executable, "-m", "scaleserve.dev.runner", str(self.dir / "runner.json")],
            env=env, log=self.logs / "runner.log", cwd=self.dir,
        )  # fmt: skip
        state.pids["runner"] = runner.pid
        self._save(state)
        api = self.cluster.api()
        self._wait(
            f"{nodes} local nodes Ready",
            lambda: self.cluster.ready_node_count(api) >= nodes,
            60.0, state,
        )  # fmt: skip
        progress(f"==> local runner: nodes {', '.join(names)} ({gpus} GPUs each, CPU cores)")

    def _start_operator(
        self,
        state: StackState,
        reconcile_interval_s: float,
        env: dict[str, str],
        progress: Progress,
    ) -> None:
        liveness, metrics = free_port(), free_port()
        operator = processes.spawn(
            [sys.executable, "-m", "scaleserve", "operator",
             "--reconcile-interval", str(reconcile_interval_s),
             "--liveness-port", str(liveness), "--metrics-port", str(metrics)],
            env=env, log=self.logs / "operator.log", cwd=self.dir,
        )  # fmt: skip
        state.pids["operator"] = operator.pid
        state.operator_metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self._save(state)
        self._wait(
            "the operator",
            lambda: processes.http_ok(f"http://127.0.0.1:{liveness}/healthz"),
            60.0, state,
        )  # fmt: skip
        progress(f"==> operator running (metrics: {state.operator_metrics_url})")

    def start_prometheus(self, state: StackState, progress: Progress = _print) -> str:
        """Start the stack's Prometheus and its pod discovery (scaleserve/dev/prometheus.py,
        prometheus_sd.py); returns its URL."""
        from scaleserve.dev import prometheus as prom

        folder = self.dir / "prometheus"
        targets = folder / "pods.json"
        operator = state.operator_metrics_url.removeprefix("http://").split("/", 1)[0]
        prom.write_config(folder / "prometheus.yml", prom.config(targets, operator))
        env = {**os.environ, processes.MARKER_ENV: state.marker}
        sd = processes.spawn(
            [sys.executable, "-m", "scaleserve.dev.prometheus_sd", self.name, str(targets)],
            env=env, log=self.logs / "prometheus-sd.log", cwd=self.dir,
        )  # fmt: skip
        state.pids["prometheus-sd"] = sd.pid
        port = free_port()
        proc = processes.spawn(
            prom.argv(prom.binaries_dir(), folder / "prometheus.yml", folder / "data", port),
            env=env, log=self.logs / "prometheus.log", cwd=self.dir,
        )  # fmt: skip
        state.pids["prometheus"] = proc.pid
        state.prometheus_url = f"http://127.0.0.1:{port}"
        self._save(state)
        self._wait("Prometheus", lambda: prom.ready(state.prometheus_url), 60.0, state)
        progress(f"==> Prometheus: {state.prometheus_url} (scraping the operator and every pod)")
        return state.prometheus_url

    def _install_crd(self, timeout_s: float) -> None:
        api = self.cluster.api()
        crd = yaml.safe_load(CRD_FILE.read_text())
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        api.create(path, crd, exist_ok=True)

        def established() -> bool:
            obj = api.get_json(f"{path}/{crd['metadata']['name']}")
            conds = obj.get("status", {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        deadline = time.monotonic() + min(timeout_s, 60.0)
        while not established():
            if time.monotonic() > deadline:
                raise StackError("the CRD did not become Established")
            time.sleep(0.2)

    def _wait(
        self, what: str, check: Callable[[], bool], timeout_s: float, state: StackState
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            for name, pid in state.pids.items():
                if not processes.alive(pid):
                    log = processes.log_tail(self.logs / f"{name}.log")
                    raise StackError(f"{name} exited while waiting for {what}:\n{log}")
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(0.3)

    def _dump_logs(self, progress: Progress) -> None:
        for log in sorted(self.logs.glob("*.log")):
            progress(f"--- {log.name}\n{processes.log_tail(log, 15)}")

    # ---------------------------------------------------------------- sample
    def apply_sample(self, state: StackState, timeout_s: float, progress: Progress) -> None:
        from scaleserve.dev.watch import endpoint_gateway_url, wait_endpoint_ready
        from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model

        model = make_tiny_model(default_model_dir())
        body = sample_endpoint(model)
        name = body["metadata"]["name"]
        progress(f"==> applying LLMEndpoint default/{name} (tiny model {model.name})")
        client = self.kube_client()
        try:
            from kubernetes import client as k8s

            k8s.CustomObjectsApi(client).create_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, body
            )
            wait_endpoint_ready(client, "default", name, timeout_s, progress)
            state.gateway_url = endpoint_gateway_url(client, "default", name)
        finally:
            client.close()
        self._save(state)
        progress(f"==> gateway URL: {state.gateway_url}")
        from scaleserve.demo import stream_answer

        stream_answer(state.gateway_url, "tiny-llama", "Write a short poem about the sea.", 32)

    def kube_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.cluster.kubeconfig)
        )

    # ------------------------------------------------------------------ down
    def down(self, progress: Progress | None = None) -> bool:
        """Stop every process of the stack, then its control plane, its pod network (namespace,
        veth, route) and its folders. True if it existed."""
        say = progress or (lambda _line: None)
        state = self.load()
        existed = (
            state is not None
            or self.dir.exists()
            or self.cluster.dir.exists()
            or podnet.exists(self.name)
        )
        if state is not None:
            for name, grace in (
                ("runner", 30.0),
                ("operator", 10.0),
                ("prometheus", 10.0),
                ("prometheus-sd", 5.0),
            ):
                pid = state.pids.get(name)
                if pid is not None and processes.alive(pid):
                    say(f"==> stopping the {name}")
                    processes.stop(pid, grace)
            leftovers = processes.kill_marked(state.marker)
            if leftovers:
                say(f"==> stopped {len(leftovers)} leftover process(es)")
        say(f"==> stopping control plane {self.name!r}")
        self.cluster.down()
        say(f"==> removing pod network {podnet.netns_name(self.name)}")
        podnet.remove(self.name)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return existed


def sample_endpoint(model_dir: Path) -> dict[str, Any]:
    text = string.Template(SAMPLE_FILE.read_text()).substitute(MODEL_DIR=str(model_dir))
    body: dict[str, Any] = yaml.safe_load(text)
    return body
