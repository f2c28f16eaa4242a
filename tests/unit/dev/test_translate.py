"""How the runner turns a pod's container into a local process (dev/translate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleserve.dev.translate import (
    TranslationError,
    component,
    container_port,
    container_process,
    literal_env,
    with_host,
)

pytestmark = pytest.mark.unit

WRAP = ("ip", "netns", "exec", "scaleserve-test")


def _engine(**extra: object) -> dict[str, object]:
    return {
        "name": "engine",
        "command": ["scaleserve", "engine"],
        "args": ["--model", "/m", "--host", "0.0.0.0", "--port", "50051"],
        "env": [{"name": "A", "value": "1"}],
        "ports": [
            {"name": "grpc", "containerPort": 50051},
            {"name": "metrics", "containerPort": 9090},
        ],
        **extra,
    }


def _spec(container: dict[str, object], **overrides: object):  # type: ignore[no-untyped-def]
    kwargs: dict[str, object] = dict(
        pod_ip="10.251.1.2",
        python="/py",
        scratch=Path("/pods/p"),
        tmp=Path("/tmp/p"),
        kubeconfig="/k/kubeconfig",
        cpu_bind="0|1",
        base_env={"HOME": "/root", "A": "base"},
        wrap=WRAP,
    )
    kwargs.update(overrides)
    return container_process(container, **kwargs)  # type: ignore[arg-type]


def test_only_scaleserve_engine_and_gateway_run() -> None:
    assert component({"command": ["scaleserve", "engine"]}) == "engine"
    assert component({"command": ["scaleserve", "gateway"]}) == "gateway"
    for command in (["scaleserve", "operator"], ["python", "x.py"], None, ["scaleserve"]):
        with pytest.raises(TranslationError, match="only `scaleserve engine`"):
            component({"name": "c", "command": command})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--host", "0.0.0.0", "--port", "1"], ["--host", "H", "--port", "1"]),
        (["--host=0.0.0.0", "--port", "1"], ["--host=H", "--port", "1"]),
        (["--port", "1"], ["--port", "1", "--host", "H"]),
        ([], ["--host", "H"]),
        (["--port", "1", "--host"], ["--port", "1", "--host", "--host", "H"]),
    ],
)
def test_host_becomes_the_pod_address(args: list[str], expected: list[str]) -> None:
    assert with_host(args, "H") == expected


def test_literal_env_is_kept_and_value_from_is_refused() -> None:
    assert literal_env({"env": [{"name": "X", "value": "1"}, {"name": "Y"}]}) == {"X": "1", "Y": ""}
    assert literal_env({}) == {}
    with pytest.raises(TranslationError, match="valueFrom"):
        literal_env({"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {}}}]})


def test_engine_process_runs_in_the_pod_network_with_its_cores_and_address() -> None:
    spec = _spec(_engine())
    assert spec.kind == "engine"
    assert spec.argv[: len(WRAP)] == WRAP
    assert spec.argv[len(WRAP) :] == (
        "/py", "-m", "scaleserve", "engine",
        "--model", "/m", "--host", "10.251.1.2", "--port", "50051",
    )  # fmt: skip
    env = spec.env
    assert env["A"] == "1"  # the container's env wins over the runner's
    assert env["HOME"] == "/root"
    assert env["HF_HOME"] == "/pods/p/hf"
    assert env["TMPDIR"] == "/tmp/p"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert env["VLLM_HOST_IP"] == "10.251.1.2"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_USE_AOT_COMPILE"] == "0"
    assert "KUBECONFIG" not in env
    assert spec.nice == 10  # below the gateway and the control plane


def test_engine_env_from_the_container_is_not_overridden() -> None:
    container = _engine(env=[{"name": "HF_HUB_OFFLINE", "value": "0"}])
    spec = _spec(container, cpu_bind=None)
    assert spec.env["HF_HUB_OFFLINE"] == "0"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in spec.env


def test_the_pods_home_emptydir_gives_way_to_the_runners_home() -> None:
    # in a pod HOME is an emptyDir (read-only root filesystem); here the compile cache is shared
    container = _engine(env=[{"name": "HOME", "value": "/home/scaleserve"}])
    assert _spec(container).env["HOME"] == "/root"


def test_gateway_gets_the_kubeconfig_and_no_engine_settings() -> None:
    gateway = {"name": "gateway", "command": ["scaleserve", "gateway"], "args": ["--port", "8000"]}
    spec = _spec(gateway, wrap=())
    assert spec.argv == (
        "/py",
        "-m",
        "scaleserve",
        "gateway",
        "--port",
        "8000",
        "--host",
        "10.251.1.2",
    )
    assert spec.env["KUBECONFIG"] == "/k/kubeconfig"
    assert spec.nice == 0
    assert "VLLM_HOST_IP" not in spec.env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in spec.env


def test_probe_ports_by_number_or_name() -> None:
    container = _engine()
    assert container_port(container, 9090) == 9090
    assert container_port(container, "8000") == 8000
    assert container_port(container, "metrics") == 9090
    with pytest.raises(TranslationError, match="no port named 'http'"):
        container_port(container, "http")
