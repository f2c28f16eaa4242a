"""A pod's container as a local process: the small, explicit translation the runner applies.

Only the two scaleserve images' containers run locally: command ``["scaleserve", "engine"]``
or ``["scaleserve", "gateway"]``. Their args are kept as the operator wrote them except
``--host``, which becomes the pod's own address (the container would listen on 0.0.0.0 inside
its own network namespace; here the pods of a stack share one, podnet.py, and each binds its
own address). The process runs inside the stack's network namespace (``wrap``: ``ip netns exec
<ns>``). Environment:

- the container's literal ``env`` values (``valueFrom`` is not supported);
- ``HF_HOME`` in the pod's folder, ``TMPDIR`` in a short per-pod folder (both emptyDirs);
  ``HOME`` stays the runner's, not the container's (an emptyDir in a pod: the root filesystem
  is read-only), so vLLM's compile cache is shared between pods like an image's layers;
- engines: ``VLLM_CPU_OMP_THREADS_BIND`` from the GPUs the runner assigned (one core per
  tensor-parallel worker), ``HF_HUB_OFFLINE=1``, a small ``VLLM_CPU_KVCACHE_SPACE``,
  ``VLLM_HOST_IP`` = the pod's address (what vLLM finds in a pod's own network namespace),
  ``VLLM_USE_AOT_COMPILE=0``: vLLM's ahead-of-time compile artifacts do not load back on the
  CPU build (``'function' object has no attribute 'finalize_loading'``), so with them every
  engine start paid for a failed load, then compiled and saved again; without them it traces
  once and starts in about half the time;
- engines run at nice 10 once Ready (``ProcessSpec.nice``, applied by the runner: processes.py
  ``lower_priority``): vLLM's CPU workers spin on their shared-memory queue
  between steps (a second after each read), so at equal priority two tensor-parallel workers
  take both cores of a small machine and the gateway, the operator and the clients wait for
  the scheduler (seen: /stats answering in 0.3 s, 64 closed-loop clients showing as 2 in
  flight). On a GPU node each engine has cores of its own; here the engines get what the
  rest leaves, the way a best-effort pod does next to guaranteed ones;
- gateways: ``KUBECONFIG`` standing in for the pod's service account token (it points at the
  API server's address on the host end of the pod network's veth).

Pure: no processes, no cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNNABLE = {"engine", "gateway"}
ENGINE_KVCACHE_GIB = "1"
ENGINE_NICE = 10  # below the gateway, the operator and the control plane (see the docstring)


class TranslationError(ValueError):
    """The container cannot run as a local process; the message says why."""


@dataclass(frozen=True)
class ProcessSpec:
    kind: str  # engine | gateway
    argv: tuple[str, ...]
    env: Mapping[str, str]
    nice: int = 0  # CPU priority of the process and of its session (see the module docstring)


def component(container: Mapping[str, Any]) -> str:
    command = list(container.get("command") or [])
    if len(command) != 2 or command[0] != "scaleserve" or command[1] not in RUNNABLE:
        raise TranslationError(
            f"container {container.get('name')!r}: only `scaleserve engine` and "
            f"`scaleserve gateway` containers run on a local node (command {command!r})"
        )
    return str(command[1])


def with_host(args: Sequence[str], host: str) -> list[str]:
    """`args` with the value of --host (either form) set to `host`, appended when absent."""
    out: list[str] = []
    replaced = False
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--host" and i + 1 < len(args):
            out += ["--host", host]
            skip = replaced = True
        elif arg.startswith("--host="):
            out.append(f"--host={host}")
            replaced = True
        else:
            out.append(arg)
    return out if replaced else [*out, "--host", host]


def literal_env(container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "valueFrom" in item:
            raise TranslationError(
                f"container {container.get('name')!r}: env {item.get('name')!r} uses valueFrom, "
                "which the local runner does not resolve"
            )
        env[str(item["name"])] = str(item.get("value", ""))
    return env


def container_process(
    container: Mapping[str, Any],
    *,
    pod_ip: str,
    python: str,
    scratch: Path,
    tmp: Path,
    kubeconfig: str,
    cpu_bind: str | None,
    base_env: Mapping[str, str],
    wrap: Sequence[str] = (),
) -> ProcessSpec:
    kind = component(container)
    args = with_host([str(a) for a in container.get("args") or []], pod_ip)
    own = {k: v for k, v in literal_env(container).items() if k != "HOME"}
    env = {**base_env, **own}
    env.update(
        HF_HOME=str(scratch / "hf"),
        TMPDIR=str(tmp),
        PYTHONUNBUFFERED="1",
    )
    nice = 0
    if kind == "engine":
        nice = ENGINE_NICE
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", ENGINE_KVCACHE_GIB)
        env.setdefault("VLLM_HOST_IP", pod_ip)
        env.setdefault("VLLM_USE_AOT_COMPILE", "0")
        if cpu_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind
    else:
        env["KUBECONFIG"] = kubeconfig
    return ProcessSpec(kind, (*wrap, python, "-m", "scaleserve", kind, *args), env, nice)


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise TranslationError(f"container {container.get('name')!r} has no port named {port!r}")
