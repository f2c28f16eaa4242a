"""The OCI runtime spec written for a container of a pod the operator builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaleserve.dev.containers import runtime_config
from tests.fixtures.manifests import workload_pods

pytestmark = pytest.mark.unit

# the parts of umoci's config.json that runtime_config reads
IMAGE: dict[str, Any] = {
    "process": {
        "user": {"uid": 65532, "gid": 65532},
        "args": ["scaleserve", "gateway"],
        "env": ["PATH=/opt/scaleserve/bin:/usr/bin"],
        "terminal": True,
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
    },
    "root": {"path": "rootfs"},
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
}


def _pods() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {name: (pod, pod["containers"][0]) for name, pod in workload_pods().items()}


def test_the_gateway_pod_runs_non_root_on_a_read_only_root(tmp_path: Path) -> None:
    pod, container = _pods()["gateway"]
    config = runtime_config(IMAGE, pod, container, rootfs=tmp_path / "rootfs",
                            scratch=tmp_path / "volumes")  # fmt: skip
    process = config["process"]
    assert process["user"] == {"uid": 65532, "gid": 65532}
    assert process["args"] == [*container["command"], *container["args"]]
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    assert all(caps == [] for caps in process["capabilities"].values())
    assert config["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    assert {ns["type"] for ns in config["linux"]["namespaces"]} == {"pid", "mount"}
    (tmp,) = [m for m in config["mounts"] if m["destination"] == "/tmp"]
    assert tmp["type"] == "bind"
    assert Path(tmp["source"]).stat().st_mode & 0o777 == 0o777
    assert IMAGE["process"]["terminal"] is True, "the image's spec is not modified"


def test_memory_empty_dirs_are_tmpfs(tmp_path: Path) -> None:
    pod, container = _pods()["engine"]
    config = runtime_config(IMAGE, pod, container, rootfs=tmp_path, scratch=tmp_path)
    (shm,) = [m for m in config["mounts"] if m["destination"] == "/dev/shm"]
    assert shm["type"] == "tmpfs"
    # the engine's model claim is not an emptyDir: nothing is mounted for it here
    assert not [m for m in config["mounts"] if m["destination"] == "/models"]


def test_a_root_user_is_refused_under_run_as_non_root(tmp_path: Path) -> None:
    pod, container = _pods()["gateway"]
    pod = {**pod, "securityContext": {"runAsNonRoot": True}}
    image = {**IMAGE, "process": {**IMAGE["process"], "user": {"uid": 0, "gid": 0}}}
    with pytest.raises(PermissionError, match="runAsNonRoot"):
        runtime_config(image, pod, container, rootfs=tmp_path, scratch=tmp_path)
    # without runAsUser in the pod, the image's own user runs
    pod = {**pod, "securityContext": {}}
    config = runtime_config(IMAGE, pod, container, rootfs=tmp_path, scratch=tmp_path)
    assert config["process"]["user"] == {"uid": 65532, "gid": 65532}
