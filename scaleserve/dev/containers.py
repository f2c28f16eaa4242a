"""A container started the way a kubelet starts it, without a container engine.

images/build.sh unpacks each image into an OCI bundle (umoci: ``rootfs/`` and a
``config.json`` holding the image's user, environment and entrypoint). `runtime_config` turns
that into the runtime spec a kubelet's runtime writes for one container of a pod the operator
builds: the pod's and the container's securityContext (user and group, runAsNonRoot,
read-only root filesystem, no capabilities, no privilege escalation), a writable folder for
each emptyDir the container mounts, and the container's command and args. `RuncContainer`
runs it with plain ``runc run``: podman's own ``run`` fails on these machines (runc on
RLIMIT_NPROC, crun on hybrid cgroups), while runc on a bundle works.

Not a whole pod: the container shares the host's network namespace (as the local stack's
pods do), and no seccomp profile is loaded.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleserve.dev import processes

_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def security_context(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's fields win over the pod's, as Kubernetes merges them."""
    return {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}


def _user(image_user: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    uid = int(context.get("runAsUser", image_user.get("uid", 0)))
    gid = int(context.get("runAsGroup", image_user.get("gid", 0)))
    if context.get("runAsNonRoot") and uid == 0:
        # the kubelet's check: CreateContainerConfigError, the container never starts
        raise PermissionError("runAsNonRoot is set and the container would run as root")
    return {"uid": uid, "gid": gid}


def _scratch_mounts(
    pod_spec: dict[str, Any], container: dict[str, Any], scratch: Path
) -> list[dict[str, Any]]:
    """A bind mount of a fresh world-writable folder for each emptyDir (as the kubelet makes
    them), a tmpfs for those of medium Memory."""
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = empty_dirs.get(mount["name"])
        if volume is None:
            continue
        if volume.get("medium") == "Memory":
            options = ["nosuid", "nodev", "mode=1777"]
            mounts.append({"destination": mount["mountPath"], "type": "tmpfs",
                           "source": "tmpfs", "options": options})  # fmt: skip
            continue
        folder = scratch / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        mounts.append({"destination": mount["mountPath"], "type": "bind",
                       "source": str(folder), "options": ["rbind", "rw"]})  # fmt: skip
    return mounts


def runtime_config(
    image: dict[str, Any],
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    *,
    rootfs: Path,
    scratch: Path,
) -> dict[str, Any]:
    """The OCI runtime spec for `container` of `pod_spec`, from the image's own spec.

    The container's ``command`` replaces the image's entrypoint (every container the operator
    writes sets one); without it the image's arguments run, followed by ``args``."""
    config = copy.deepcopy(image)
    context = security_context(pod_spec, container)
    process = config["process"]
    process["user"] = _user(process.get("user", {}), context)
    if "command" in container:
        process["args"] = [*container["command"], *container.get("args", [])]
    else:
        process["args"] = [*process["args"], *container.get("args", [])]
    process["env"] = [
        *process.get("env", []),
        *(f"{e['name']}={e['value']}" for e in container.get("env", []) if "value" in e),
    ]
    process["terminal"] = False
    process["noNewPrivileges"] = not context.get("allowPrivilegeEscalation", True)
    capabilities = context.get("capabilities", {})
    if "ALL" in capabilities.get("drop", []):
        process["capabilities"] = {
            name: list(capabilities.get("add", [])) for name in _CAPABILITY_SETS
        }
    config["root"] = {"path": str(rootfs), "readonly": bool(context.get("readOnlyRootFilesystem"))}
    linux = config.setdefault("linux", {})
    linux["namespaces"] = [ns for ns in linux.get("namespaces", []) if ns["type"] != "network"]
    config["mounts"] = [*config.get("mounts", []), *_scratch_mounts(pod_spec, container, scratch)]
    return config


@dataclass
class RuncContainer:
    """One container run by ``runc run`` in the foreground (a child of this process)."""

    name: str
    run_dir: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        bundle: Path,
        pod_spec: dict[str, Any],
        container: dict[str, Any],
        *,
        run_dir: Path,
        env: dict[str, str] | None = None,
    ) -> RuncContainer:
        """Run `container` of `pod_spec` from the unpacked image at `bundle`; its output goes
        to run_dir/container.log, its emptyDirs live under run_dir/volumes."""
        image = json.loads((bundle / "config.json").read_text())
        config = runtime_config(image, pod_spec, container, rootfs=bundle / "rootfs",
                                scratch=run_dir / "volumes")  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
        name = f"scaleserve-{container['name']}-{os.getpid()}-{time.monotonic_ns()}"
        argv = ["runc", "--root", str(run_dir / "state"), "run", "--bundle", str(run_dir), name]
        process = processes.spawn(argv, env={**os.environ, **(env or {})},
                                  log=run_dir / "container.log")  # fmt: skip
        return cls(name, run_dir, process)

    def _runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["runc", "--root", str(self.run_dir / "state"), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def pid(self) -> int | None:
        """The host pid of the container's first process, once it runs."""
        state = self._runc("state", self.name)
        if state.returncode != 0:
            return None
        pid = int(json.loads(state.stdout).get("pid", 0))
        return pid or None

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return processes.log_tail(self.run_dir / "container.log", lines)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (as the kubelet sends), SIGKILL after `grace_s`, then delete the container."""
        if self.running():
            self._runc("kill", self.name, signal.SIGTERM.name)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._runc("kill", "--all", self.name, signal.SIGKILL.name)
                self.process.wait(timeout=30)
        self._runc("delete", "--force", self.name)
        shutil.rmtree(self.run_dir / "volumes", ignore_errors=True)
