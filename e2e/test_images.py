"""The images built from images/*.Dockerfile, run the way a kubelet runs them.

images/build.sh builds the operator and gateway images without Docker (cached by the hash of
their inputs, so a warm machine only checks the hash) and unpacks them into OCI bundles;
scaleserve/dev/containers.py starts one with `runc run` under the securityContext, emptyDirs
and command of the pod the operator writes. The gateway container then serves a real engine
process (tests/fixtures/engines.py) over gRPC: it must run as the non-root user, on a
read-only root filesystem, and answer the paths its probes use.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.local.host import needs_root
from scaleserve.dev.cluster import cache_dir
from scaleserve.dev.containers import RuncContainer
from scaleserve.operator.builders import Observed, Owner, PlacedGroup, desired
from scaleserve.operator.builders.security import RUN_AS_USER
from scaleserve.operator.layout import Group
from scaleserve.operator.spec import parse_spec
from tests.fixtures.engines import EngineProcess, free_port

# the short twin of the node scenarios (test_node.py, test_node_helm.py): the small images
# only, from the cache when warm (about 60 s; cold about 3.5 min, Debian's podman installed
# and the base built from its mirror on first use)
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[1]
# cold, about 2.5 min here (a Debian base and two pip installs); within pytest's 600 s a test
BUILD_TIMEOUT_S = 9 * 60
START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def bundles() -> dict[str, Path]:
    needs_root()
    names = ("operator", "gateway")
    subprocess.run(["bash", "images/build.sh", *names], cwd=ROOT, check=True,
                   timeout=BUILD_TIMEOUT_S)  # fmt: skip
    folder = cache_dir() / "images"
    return {name: Path((folder / f"{name}.bundle").read_text().strip()) for name in names}


def _gateway_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    """The gateway Deployment's pod spec and container, as the operator writes them."""
    spec = parse_spec({"model": {"uri": "hf://org/m"}, "layout": {"replicas": 1,
                       "tensorParallel": 1}})  # fmt: skip
    manifests = desired(spec, Observed(Owner("e", "ns", "u"), [PlacedGroup(Group("g0", 8, 1))]))
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    return pod_spec, container


def _uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def _root_mount_options(pid: int) -> list[str]:
    """The options of the container's root mount, as its own processes see it."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError(f"no root mount for pid {pid}")


@pytest.mark.parametrize("name", ["operator", "gateway"])
def test_the_image_runs_as_its_non_root_user(bundles: dict[str, Path], name: str) -> None:
    # what the image itself asks for, before any securityContext: the Dockerfile's USER
    config = json.loads((bundles[name] / "config.json").read_text())
    assert config["process"]["user"]["uid"] == RUN_AS_USER


@pytest.fixture
def gateway_container(
    bundles: dict[str, Path], engine_replica: EngineProcess, tmp_path: Path
) -> Iterator[tuple[RuncContainer, dict[str, Any], int, int]]:
    pod_spec, container = _gateway_pod()
    port, internal = free_port(), free_port()
    # the pod's container, but host networking and a static engine address: no cluster here
    container["args"] = [
        "--host", "127.0.0.1", "--port", str(port), "--internal-port", str(internal),
        "--replicas", engine_replica.address, "--health-timeout", "10",
    ]  # fmt: skip
    running = RuncContainer.start(bundles["gateway"], pod_spec, container, run_dir=tmp_path,
                                  env={"TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
    try:
        yield running, container, port, internal
    finally:
        running.stop()


def _wait_ok(running: RuncContainer, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert running.running(), f"the container exited:\n{running.log_tail()}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200:\n{running.log_tail()}")


def test_the_gateway_container_serves_under_the_operators_pod_security(
    gateway_container: tuple[RuncContainer, dict[str, Any], int, int],
) -> None:
    running, container, port, internal = gateway_container
    ports = {"http": port, "internal": internal}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        _wait_ok(running, f"http://127.0.0.1:{ports[get['port']]}{get['path']}")
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                       json={"model": "tiny", "prompt": "hello", "max_tokens": 4})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] > 0
    pid = running.pid()
    assert pid is not None
    assert _uids(pid) == [RUN_AS_USER] * 4
    assert "ro" in _root_mount_options(pid)
    assert os.stat(f"/proc/{pid}").st_uid == RUN_AS_USER
    assert "Read-only file system" not in running.log_tail(1000)
