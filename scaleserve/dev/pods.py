"""One pod on a local node, run the way the kubelet runs it, with its container as a process.

Lifecycle: take the pod's GPUs and an address; start the container's process (translate.py);
probe it (startup, readiness, liveness: httpGet on the pod's address) and publish the pod's
status (phase, podIP, hostIP, containerStatuses, Ready); restart a process that exits, with
the kubelet's back-off (10 s doubling to 5 min, reset after 10 min of running); on deletion run
the preStop sleep, SIGTERM, wait out the grace period, SIGKILL the process group, then remove
the pod object (delete with grace 0).

Probes run every second; a probe's failure threshold covers the same time window as the
kubelet's (periodSeconds x failureThreshold), so a failing process is noticed no later, and a
ready one sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from scaleserve.dev.podnet import AddressPool, GpuPool
from scaleserve.dev.processes import lower_priority, signal_group
from scaleserve.dev.translate import (
    ProcessSpec,
    TranslationError,
    container_port,
    container_process,
)

log = logging.getLogger("scaleserve.dev.runner")

PROBE_TICK_S = 1.0
BACKOFF_START_S, BACKOFF_MAX_S, BACKOFF_RESET_S = 10.0, 300.0, 600.0
GPU_SUFFIX = "/gpu"


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_gpus(container: Mapping[str, Any]) -> int:
    res = container.get("resources") or {}
    amounts = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    return sum(int(str(v)) for k, v in amounts.items() if k.endswith(GPU_SUFFIX))


@dataclass
class LocalNode:
    name: str
    address: str
    ips: AddressPool
    gpus: GpuPool


@dataclass
class RunnerContext:
    """What every pod worker shares."""

    core: Any  # kubernetes_asyncio CoreV1Api
    http: aiohttp.ClientSession
    python: str
    kubeconfig: str
    pods_dir: Path
    tmp_dir: Path  # short: unix socket paths under TMPDIR must stay below 108 bytes
    base_env: Mapping[str, str]
    wrap: tuple[str, ...] = ()  # runs a command inside the pod network's namespace


@dataclass
class _Probe:
    path: str
    port: int
    window_ticks: int  # consecutive failing ticks that count as failed
    timeout_s: float

    @classmethod
    def of(cls, container: Mapping[str, Any], key: str) -> _Probe | None:
        spec = container.get(key)
        if not spec or "httpGet" not in spec:
            return None
        get = spec["httpGet"]
        period = float(spec.get("periodSeconds", 10))
        failures = int(spec.get("failureThreshold", 3))
        return cls(
            path=get.get("path", "/"),
            port=container_port(container, get["port"]),
            window_ticks=max(1, round(period * failures / PROBE_TICK_S)),
            timeout_s=float(spec.get("timeoutSeconds", 1)),
        )


@dataclass
class _Container:
    name: str
    image: str
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class PodWorker:
    def __init__(self, ctx: RunnerContext, node: LocalNode, pod: dict[str, Any]) -> None:
        self.ctx, self.node, self.pod = ctx, node, pod
        meta = pod["metadata"]
        self.uid, self.name, self.namespace = meta["uid"], meta["name"], meta["namespace"]
        self.key = f"{self.namespace}/{self.name}"
        container = pod["spec"]["containers"][0]
        self.container = _Container(container["name"], container.get("image", ""))
        self.ip = ""
        self.gpus: list[int] = []
        self.phase = "Pending"
        self.start_time = now_stamp()
        self._transitions: dict[str, tuple[bool, str]] = {}
        self._published: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._gone = False
        self._shutdown_grace_s: float | None = None
        self.dir = ctx.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.tmp = ctx.tmp_dir / self.uid[:8]

    # ------------------------------------------------------------- inputs
    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self._changed.set()

    def gone(self, grace_s: float | None = None) -> None:
        """The pod object was removed (force-deleted), or the runner stops: stop the process
        (within `grace_s`, without its preStop hook, if given) and leave the object alone."""
        self._gone = True
        self._shutdown_grace_s = grace_s
        self._changed.set()

    @property
    def terminating(self) -> bool:
        return self._gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    def _grace_s(self) -> float:
        if self._shutdown_grace_s is not None:
            return self._shutdown_grace_s
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    async def _until_terminating(self) -> None:
        while not self.terminating:
            self._changed.clear()
            await self._changed.wait()

    # ----------------------------------------------------------------- run
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: pod worker failed", self.key)
        finally:
            shutil.rmtree(self.dir / "hf", ignore_errors=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.node.gpus.release(self.gpus)
            if self.ip:
                self.node.ips.release(self.ip)

    async def _run(self) -> None:
        spec_container = self.pod["spec"]["containers"][0]
        wanted = pod_gpus(spec_container)
        gpus = self.node.gpus.allocate(wanted)
        if gpus is None:
            self.container.state = {"waiting": {"reason": "UnexpectedAdmissionError",
                                                "message": f"{wanted} GPUs not free"}}  # fmt: skip
            await self.publish()
            await self._until_terminating()
            return await self._finish()
        self.gpus = gpus
        self.ip = self.node.ips.allocate()
        self.dir.mkdir(parents=True, exist_ok=True)
        while not self.terminating:
            try:
                spec = container_process(
                    spec_container,
                    pod_ip=self.ip,
                    python=self.ctx.python,
                    scratch=self.dir,
                    tmp=self.tmp,
                    kubeconfig=self.ctx.kubeconfig,
                    cpu_bind=self.node.gpus.cores(self.gpus) if self.gpus else None,
                    base_env=self.ctx.base_env,
                    wrap=self.ctx.wrap,
                )
            except TranslationError as exc:
                self.container.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                }
                await self.publish()
                await self._until_terminating()
                break
            (self.dir / "hf").mkdir(exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
            ran_s, code, reason = await self._run_once(spec, spec_container)
            if code is None:  # stopped for deletion
                break
            await self._back_off(ran_s, code, reason)
        await self._finish()

    async def _run_once(
        self, spec: ProcessSpec, container: Mapping[str, Any]
    ) -> tuple[float, int | None, str]:
        """Run the process once: (seconds it ran, exit code or None if stopped for deletion,
        why it ended)."""
        with open(self.dir / "container.log", "ab") as out:  # noqa: ASYNC230 (local, instant)
            proc = await asyncio.create_subprocess_exec(
                *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                env=dict(spec.env), cwd=self.dir, start_new_session=True,
            )  # fmt: skip
        started, started_at = time.monotonic(), now_stamp()
        log.info("%s: started %s as pid %d on %s", self.key, spec.kind, proc.pid, self.ip)
        c = self.container
        c.container_id = f"local://{self.uid}-{c.restart_count}-{proc.pid}"
        c.state, c.started, c.ready = {"running": {"startedAt": started_at}}, False, False
        self.phase = "Running"
        await self.publish()
        # Lowered once Ready (processes.lower_priority says why not at once).
        on_ready = functools.partial(lower_priority, proc.pid, spec.nice)
        probes = asyncio.create_task(self._probe(container, on_ready), name=f"probe {self.key}")
        exited = asyncio.create_task(proc.wait(), name=f"wait {self.key}")
        deleted = asyncio.create_task(self._until_terminating(), name=f"delete {self.key}")
        try:
            await asyncio.wait({probes, exited, deleted}, return_when=asyncio.FIRST_COMPLETED)
            reason = "Error"
            if deleted.done():
                prestop = 0.0 if self._shutdown_grace_s is not None else self._prestop_s(container)
                await self._stop(proc, exited, prestop, self._grace_s())
                return time.monotonic() - started, None, "deleted"
            if probes.done():
                reason = probes.result()
                log.warning("%s: %s; restarting", self.key, reason)
                await self._stop(proc, exited, 0.0, min(self._grace_s(), 30.0))
            await exited
            signal_group(proc.pid, signal.SIGKILL)  # whatever the process left behind
            code = proc.returncode if proc.returncode is not None else -1
            c.last_state = {
                "terminated": {
                    "exitCode": code if code >= 0 else 128 - code,
                    "reason": reason if code else "Completed",
                    "startedAt": started_at,
                    "finishedAt": now_stamp(),
                }
            }
            return time.monotonic() - started, code, reason
        finally:
            for task in (probes, deleted):
                task.cancel()
            await asyncio.gather(probes, deleted, return_exceptions=True)

    async def _stop(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int], prestop_s: float,
        grace_s: float,
    ) -> None:  # fmt: skip
        """preStop sleep, SIGTERM (the process drains), SIGKILL the group after the grace."""
        deadline = time.monotonic() + grace_s
        if prestop_s > 0 and not exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), min(prestop_s, grace_s))
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), max(left, 2.0))
        signal_group(proc.pid, signal.SIGKILL)
        await exited
        self.container.ready = False

    @staticmethod
    def _prestop_s(container: Mapping[str, Any]) -> float:
        hook = (container.get("lifecycle") or {}).get("preStop") or {}
        return float((hook.get("sleep") or {}).get("seconds", 0))

    async def _back_off(self, ran_s: float, code: int, reason: str) -> None:
        c = self.container
        c.restart_count += 1
        c.ready = c.started = False
        failures = 1 if ran_s >= BACKOFF_RESET_S else c.restart_count
        delay = min(BACKOFF_START_S * 2 ** (failures - 1), BACKOFF_MAX_S)
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:.0f}s restarting failed container "
                                          f"(exit code {code}, {reason})"}}  # fmt: skip
        log.warning("%s: exited with %d (%s); restart in %.0fs", self.key, code, reason, delay)
        await self.publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until_terminating(), delay)

    async def _probe(self, container: Mapping[str, Any], on_ready: Callable[[], None]) -> str:
        """Run the probes until liveness or startup fails; returns the reason. `on_ready` is
        called each time the container turns Ready."""
        startup = _Probe.of(container, "startupProbe")
        readiness = _Probe.of(container, "readinessProbe")
        liveness = _Probe.of(container, "livenessProbe")
        c = self.container
        failing = {"startup": 0, "readiness": 0, "liveness": 0}
        while True:
            if not c.started:
                if startup is None or await self._check(startup):
                    c.started = True
                else:
                    failing["startup"] += 1
                    if failing["startup"] >= startup.window_ticks:
                        return "startup probe failed"
            if c.started:
                ready = c.ready
                if readiness is None or await self._check(readiness):
                    failing["readiness"], ready = 0, True
                else:
                    failing["readiness"] += 1
                    if not c.ready or failing["readiness"] >= readiness.window_ticks:
                        ready = False
                if ready != c.ready:
                    if ready:
                        on_ready()
                    c.ready = ready
                    log.info("%s: %s", self.key, "ready" if ready else "not ready")
                    await self.publish()
                if liveness is not None:
                    failing["liveness"] = (
                        0 if await self._check(liveness) else (failing["liveness"] + 1)
                    )
                    if failing["liveness"] >= liveness.window_ticks:
                        return "liveness probe failed"
            await asyncio.sleep(PROBE_TICK_S)

    async def _check(self, probe: _Probe) -> bool:
        url = f"http://{self.ip}:{probe.port}{probe.path}"
        try:
            timeout = aiohttp.ClientTimeout(total=probe.timeout_s)
            async with self.ctx.http.get(url, timeout=timeout) as resp:
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    # -------------------------------------------------------------- status
    def _condition(self, kind: str, ok: bool) -> dict[str, Any]:
        prior = self._transitions.get(kind)
        if prior is None or prior[0] != ok:
            prior = (ok, now_stamp())
            self._transitions[kind] = prior
        return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": prior[1]}

    def status(self) -> dict[str, Any]:
        ready = self.container.ready and not self._gone
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.node.address,
            "hostIPs": [{"ip": self.node.address}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", bool(self.ip)),
                self._condition("Initialized", True),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
            "containerStatuses": [self.container.status()],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    async def publish(self) -> None:
        if self._gone:
            return
        status = self.status()
        if status == self._published:
            return
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await self.ctx.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}
            )
            self._published = status
        except ApiException as exc:
            if exc.status != 404:
                log.warning("%s: status update failed: %s", self.key, exc.reason)

    async def _finish(self) -> None:
        """Remove the pod object once its process is gone (what the kubelet does last)."""
        if self._gone:
            return
        from kubernetes_asyncio.client import V1DeleteOptions, V1Preconditions
        from kubernetes_asyncio.client.exceptions import ApiException

        options = V1DeleteOptions(
            grace_period_seconds=0, preconditions=V1Preconditions(uid=self.uid)
        )
        try:
            await self.ctx.core.delete_namespaced_pod(
                self.name, self.namespace, body=options, grace_period_seconds=0
            )
            log.info("%s: stopped and removed", self.key)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("%s: final delete failed: %s", self.key, exc.reason)
