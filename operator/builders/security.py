"""What the `restricted` Pod Security Standard asks of every pod the operator writes.

The images run as the unprivileged user 65532 (images/*.Dockerfile: `USER 65532:65532`); the
root filesystem is read-only, so every path a process writes is an emptyDir of the pod.
"""

from __future__ import annotations

from typing import Any

RUN_AS_USER = 65532  # the images' user and group


def pod_security_context() -> dict[str, Any]:
    # no fsGroup: emptyDirs are writable by any user, and a group change would walk a model
    # PersistentVolume file by file at every start
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def scratch_volume(
    name: str, path: str, size_limit: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An emptyDir and its mount: a writable folder on the read-only root filesystem."""
    empty_dir: dict[str, Any] = {"sizeLimit": size_limit} if size_limit else {}
    return {"name": name, "emptyDir": empty_dir}, {"name": name, "mountPath": path}
