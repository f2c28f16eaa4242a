"""The local runner: a kubelet for a few local nodes whose pods become real local processes.

It registers its nodes (``nvidia.com/gpu`` capacity, no kwok annotation, so kwok leaves them
and their pods alone), keeps them Ready (node Lease renewed every 10 s, status every 60 s),
watches the pods bound to them and runs each one with a `PodWorker` (pods.py). On SIGTERM it
stops every process (SIGTERM, then SIGKILL after a few seconds) and exits.

Run by `scaleserve dev up` as ``python -m scaleserve.dev.runner CONFIG.json``; the config names
the kubeconfig, the nodes (name, GPUs, pod subnet), the pod network's namespace (pods' processes
run inside it; the runner stays on the host and probes them over the veth) and the folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from scaleserve.dev.cluster import cache_dir
from scaleserve.dev.podnet import AddressPool, GpuPool, node_address
from scaleserve.dev.pods import LocalNode, PodWorker, RunnerContext, now_stamp

log = logging.getLogger("scaleserve.dev.runner")

LOCAL_NODE_LABEL = "scaleserve.dev/local-node"
GPU_RESOURCE = "nvidia.com/gpu"
LEASE_S, LEASE_RENEW_S, STATUS_EVERY_S = 40, 10.0, 60.0
SHUTDOWN_GRACE_S = 5.0


@dataclass(frozen=True)
class NodeConfig:
    name: str
    gpus: int
    subnet: str


@dataclass(frozen=True)
class RunnerConfig:
    name: str
    kubeconfig: str
    pods_dir: str
    tmp_dir: str
    nodes: tuple[NodeConfig, ...]
    env: dict[str, str] = field(default_factory=dict)
    cpus: int = 0  # 0: os.cpu_count()
    netns: str = ""  # the pod network's namespace, where pods' processes run ("": the host's)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> RunnerConfig:
        raw = json.loads(path.read_text())
        raw["nodes"] = tuple(NodeConfig(**n) for n in raw["nodes"])
        return cls(**raw)


def node_manifest(runner: str, node: NodeConfig, address: str) -> dict[str, Any]:
    """A Node the runner is the kubelet of: GPU capacity and labels, no kwok annotation."""
    capacity = {
        "cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110",
        "ephemeral-storage": "100Gi", GPU_RESOURCE: str(node.gpus),
    }  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "local",
                LOCAL_NODE_LABEL: runner,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(node.gpus),
                "nvidia.com/gpu.product": "CPU-standing-in",
            },
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": dict(capacity),
                   "addresses": [{"type": "InternalIP", "address": address},
                                 {"type": "Hostname", "address": node.name}]},
    }  # fmt: skip


def node_status(address: str, name: str, capacity: dict[str, str]) -> dict[str, Any]:
    stamp = now_stamp()

    def cond(kind: str, ok: bool, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": reason,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            cond("Ready", True, "LocalRunnerReady"),
            cond("MemoryPressure", False, "LocalRunnerHasSufficientMemory"),
            cond("DiskPressure", False, "LocalRunnerHasNoDiskPressure"),
            cond("PIDPressure", False, "LocalRunnerHasSufficientPID"),
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": "",
            "containerRuntimeVersion": "local://processes",
            "kernelVersion": os.uname().release,
            "kubeProxyVersion": "",
            "kubeletVersion": "local",
            "machineID": "",
            "operatingSystem": "linux",
            "osImage": "scaleserve local runner",
            "systemUUID": "",
        },
    }


class Runner:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        cpus = config.cpus or os.cpu_count() or 1
        self.nodes = {
            n.name: LocalNode(n.name, node_address(n.subnet), AddressPool(n.subnet),
                              GpuPool(n.gpus, cpus))
            for n in config.nodes
        }  # fmt: skip
        self.workers: dict[str, PodWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        from kubernetes_asyncio import client, config

        await config.load_kube_config(config_file=self.config.kubeconfig)
        async with client.ApiClient() as api, aiohttp.ClientSession() as http:
            core = client.CoreV1Api(api)
            ctx = RunnerContext(
                core=core,
                http=http,
                python=sys.executable,
                kubeconfig=self.config.kubeconfig,
                pods_dir=Path(self.config.pods_dir),
                tmp_dir=Path(self.config.tmp_dir),
                # Inductor's kernels compile to a cache under TMPDIR, which is per pod: shared
                # instead, as an image's layers would be, a restarted or reshaped engine loads
                # them rather than compiling C++ again (minutes on a busy 2-core machine).
                base_env={
                    "TORCHINDUCTOR_CACHE_DIR": str(cache_dir() / "torchinductor"),
                    **os.environ,
                    **self.config.env,
                },
                wrap=("ip", "netns", "exec", self.config.netns) if self.config.netns else (),
            )
            for node in self.config.nodes:
                await self._register(core, node)
            loops = [asyncio.create_task(self._heartbeat(api, core), name="heartbeat")]
            loops += [
                asyncio.create_task(self._watch(core, ctx, name), name=f"watch {name}")
                for name in self.nodes
            ]
            log.info("runner %s: nodes %s ready", self.config.name, ", ".join(self.nodes))
            try:
                await stop.wait()
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                await self._shutdown()

    async def _register(self, core: Any, node: NodeConfig) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        address = self.nodes[node.name].address
        body = node_manifest(self.config.name, node, address)
        try:
            await core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        await self._report(core, node.name)

    async def _report(self, core: Any, name: str) -> None:
        node = next(n for n in self.config.nodes if n.name == name)
        address = self.nodes[name].address
        capacity = node_manifest(self.config.name, node, address)["status"]["capacity"]
        await core.patch_node_status(name, {"status": node_status(address, name, capacity)})

    async def _heartbeat(self, api: Any, core: Any) -> None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        leases = client.CoordinationV1Api(api)
        last_status = asyncio.get_running_loop().time()
        while True:
            renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for name in self.nodes:
                body: Any = {"metadata": {"name": name, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_S,
                                 "renewTime": renew}}  # fmt: skip
                try:
                    try:
                        await leases.patch_namespaced_lease(name, "kube-node-lease", body)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                        await leases.create_namespaced_lease("kube-node-lease", body)
                    if asyncio.get_running_loop().time() - last_status > STATUS_EVERY_S:
                        await self._report(core, name)
                except (ApiException, aiohttp.ClientError, OSError) as exc:
                    log.warning("node %s heartbeat failed: %s", name, exc)
            if asyncio.get_running_loop().time() - last_status > STATUS_EVERY_S:
                last_status = asyncio.get_running_loop().time()
            await asyncio.sleep(LEASE_RENEW_S)

    async def _watch(self, core: Any, ctx: RunnerContext, node: str) -> None:
        from kubernetes_asyncio import watch

        selector = f"spec.nodeName={node}"
        while True:
            try:
                listed = await core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                data = json.loads(await listed.read())
                seen = set()
                for pod in data["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self._dispatch(ctx, node, "MODIFIED", pod)
                for uid, worker in list(self.workers.items()):
                    if worker.node.name == node and uid not in seen:
                        worker.gone()
                version = data["metadata"]["resourceVersion"]
                async with watch.Watch().stream(
                    core.list_pod_for_all_namespaces, field_selector=selector,
                    resource_version=version, timeout_seconds=300,
                ) as stream:  # fmt: skip
                    async for event in stream:
                        if event["type"] == "ERROR":
                            break
                        self._dispatch(ctx, node, event["type"], event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pod watch on %s failed (%s); relisting", node, exc)
                await asyncio.sleep(1.0)

    def _dispatch(self, ctx: RunnerContext, node: str, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.gone()
            return
        if worker is not None:
            worker.update(pod)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(ctx, self.nodes[node], pod)
        self.workers[uid] = worker
        task = asyncio.create_task(worker.run(), name=f"pod {worker.key}")
        self.tasks[uid] = task
        task.add_done_callback(functools.partial(self._forget, uid))

    def _forget(self, uid: str, _task: asyncio.Task[None]) -> None:
        self.workers.pop(uid, None)
        self.tasks.pop(uid, None)

    async def _shutdown(self) -> None:
        """Stop every pod's process quickly (the cluster is going away with us)."""
        for worker in self.workers.values():
            worker.gone(SHUTDOWN_GRACE_S)
        tasks = list(self.tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S + 15)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _main(config: RunnerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Runner(config).run(stop)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scaleserve.dev.runner CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(RunnerConfig.load(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
