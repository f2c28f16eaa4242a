"""Objectives mode on kwok GPU nodes, load fed through the gateway /stats contract: the layout
follows the load within minGPUs..maxGPUs and never goes dark; a malformed profile is named in
the status; minGPUs 0 scales to zero when idle and back when the gateways hold requests; latency
the gateways report missing the objective at a load the profile says is fine grows the GPUs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from scaleserve.latency import bucket
from tests.fixtures.cluster import GpuPool, KubeCluster
from tests.fixtures.endpoints import (
    MODEL,
    create_endpoint,
    engine_pods,
    event_messages,
    event_reasons,
    wait_status,
)
from tests.fixtures.operator_harness import OperatorProcess, StatsServer, Watch, kubectl
from tests.fixtures.profiles import profile_document

pytestmark = pytest.mark.control_plane

MAX_GPUS, SURGE = 8, 8
# TP1 carries about 7 requests in flight within TBT 11 ms (6 req/s); TP8 is faster per request
# but carries less per GPU, so the fewest GPUs are TP1 replicas
PROFILE = profile_document(
    {1: [(1, 20, 10), (4, 21, 10.5)], 8: [(1, 5, 3), (4, 6, 3.5)]}, output_tokens=100
)
HIGH, LOW = 200.0, 2.0
MEASURED_LOAD = 10.0


def objectives_spec(pool: GpuPool, profile: dict[str, Any], **autoscaling: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "autoscaling": {
            "mode": "objectives",
            "objectives": {"tbtP50Ms": 11},
            "minGPUs": 1,
            "maxGPUs": MAX_GPUS,
            "surgeGPUs": SURGE,
            "tensorParallelCandidates": [8, 1],
            "profile": profile,
            "windowSeconds": 2,
            "cooldownSeconds": 2,
            **autoscaling,
        },
        **pool.pod_placement(),
    }


def settled(gpus: Callable[[int], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (
        s.get("phase") == "Ready"
        and s.get("currentLayout") == s.get("targetLayout")
        and gpus(int(s.get("gpus", -1)))
    )


def profile_config_map(kube_api: Any, namespace: str, document: dict[str, Any]) -> None:
    body = {
        "metadata": {"name": "tiny-profile"},
        "data": {"profile.yaml": yaml.safe_dump(document)},
    }
    core = client.CoreV1Api(kube_api)
    try:
        core.replace_namespaced_config_map("tiny-profile", namespace, body)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


def _created_with_a_malformed_profile(
    kube_api: Any, namespace: str, pool: GpuPool, operator: OperatorProcess
) -> None:
    """The endpoint created on a ConfigMap profile with a negative TBT: Degraded, the bad field
    named, no objectives state."""
    broken = json.loads(json.dumps(PROFILE))
    broken["tensorParallel"][0]["points"][1]["tbtMs"] = -1
    profile_config_map(kube_api, namespace, broken)
    ref = {"configMapKeyRef": {"name": "tiny-profile"}}
    create_endpoint(kube_api, namespace, "chat", objectives_spec(pool, ref))
    degraded = wait_status(
        kube_api,
        namespace,
        "chat",
        lambda s: s.get("phase") == "Degraded",
        "the malformed profile to degrade the endpoint",
        op=operator,
    )
    assert (
        "ConfigMap tiny-profile key profile.yaml: tensorParallel.0.points.1.tbtMs"
        in (degraded["message"])
    )
    assert degraded["objectives"]["state"] == "NoProfile"


def _assert_kubectl_shows_the_objectives(kube_cluster: KubeCluster, namespace: str) -> None:
    table = kubectl(kube_cluster, "get", "llmep", "chat", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[4:7] == ["MODE", "GPUS", "OBJECTIVES"]
    assert row.split()[4:6] == ["objectives", "8/8"]
    described = kubectl(kube_cluster, "describe", "llmep", "chat", "-n", namespace).stdout
    for needle in ("Mode:", "objectives", "Gpu Usage:", "8/8", "Capacities:", "Reason:"):
        assert needle in described, described


def test_objectives_mode_follows_the_load_within_the_bounds_never_dark(
    kube_api: Any,
    kube_cluster: KubeCluster,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
    watch: Watch,
) -> None:
    pool: GpuPool = gpu_pool(nodes=2, gpus=8)
    stats_server.set(namespace, "chat", HIGH)
    _created_with_a_malformed_profile(kube_api, namespace, pool, operator)

    profile_config_map(kube_api, namespace, PROFILE)
    top = wait_status(
        kube_api, namespace, "chat", settled(lambda g: g == 8), "8 GPUs", timeout_s=120, op=operator
    )
    assert (top["mode"], top["gpuUsage"], top["gpuBounds"]) == ("objectives", "8/8", "1-8")
    assert {c["tensorParallel"] for c in top["objectives"]["capacities"]} == {8, 1}

    stats_server.set(namespace, "chat", LOW)
    low = wait_status(
        kube_api, namespace, "chat", settled(lambda g: 1 <= g < 8), "fewer GPUs", 120, operator
    )
    assert low["objectives"]["state"] == "Met"
    assert low["objectives"]["reason"]

    stats_server.set(namespace, "chat", HIGH)
    wait_status(
        kube_api, namespace, "chat", settled(lambda g: g == 8), "8 GPUs again", 120, operator
    )
    assert watch.errors == []
    assert watch.max_gpus <= MAX_GPUS + SURGE
    assert watch.min_ready_after_serving is not None
    assert watch.min_ready_after_serving > 0
    started = event_messages(kube_api, namespace, "chat", "ReshapeStarted")
    assert len(started) >= 3, started
    _assert_kubectl_shows_the_objectives(kube_cluster, namespace)


def test_minimum_zero_scales_to_zero_when_idle_and_back_when_requests_are_held(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    stats_server.set(namespace, "chat", LOW)
    spec = objectives_spec(pool, {"inline": PROFILE}, minGPUs=0, scaleToZeroAfterSeconds=3)
    create_endpoint(kube_api, namespace, "chat", spec)
    wait_status(kube_api, namespace, "chat", settled(lambda g: g > 0), "serving", op=operator)

    stats_server.set(namespace, "chat", 0.0)
    idle = wait_status(
        kube_api,
        namespace,
        "chat",
        lambda s: s.get("phase") == "Idle" and s.get("gpus") == 0,
        "scaled to zero",
        timeout_s=60,
        op=operator,
    )
    assert idle["targetLayout"] == "0"
    assert idle["gpuUsage"] == "0/8"
    assert idle["objectives"]["state"] == "ScaledToZero"
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deployments] == ["chat-gateway"]

    def no_engine_pods(_: dict[str, Any]) -> bool:
        return not engine_pods(kube_api, namespace, "chat")

    wait_status(kube_api, namespace, "chat", no_engine_pods, "engine pods gone", op=operator)

    stats_server.held[(namespace, "chat")] = 2
    back = wait_status(
        kube_api, namespace, "chat", settled(lambda g: g > 0), "back from zero", 60, operator
    )
    assert back["objectives"]["state"] in ("Starting", "Met")
    reasons = event_reasons(kube_api, namespace, "chat")
    assert "ScaleToZero" in reasons
    assert "ScaleFromZero" in reasons


def test_measured_latency_that_misses_the_objective_grows_the_gpus_and_shows_in_the_status(
    kube_api: Any,
    namespace: str,
    gpu_pool: Any,
    operator: OperatorProcess,
    stats_server: StatsServer,
) -> None:
    pool: GpuPool = gpu_pool(nodes=1, gpus=8)
    key = (namespace, "chat")
    stats_server.set(namespace, "chat", MEASURED_LOAD)
    spec = objectives_spec(pool, {"inline": PROFILE}, tensorParallelCandidates=[1])
    create_endpoint(kube_api, namespace, "chat", spec)
    # by the profile TP1 carries about 7 in flight within TBT 11 ms: 10 in flight fit 2 x TP1
    before = wait_status(
        kube_api, namespace, "chat", settled(lambda g: g >= 1), "serving", 120, operator
    )
    start = int(before["gpus"])
    assert start < MAX_GPUS
    # the gateways measure TBT 30 ms on TP1 at that load: the profile is wrong for this endpoint
    tbt = [[bucket(30.0), 50]]
    stats_server.latency[key] = [
        {"tensor_parallel": 1, "in_flight_avg": MEASURED_LOAD, "ttft_ms": tbt, "tbt_ms": tbt}
    ]

    def grown(s: dict[str, Any]) -> bool:
        entries = (s.get("objectives") or {}).get("capacities") or []
        measured = [e for e in entries if e.get("source") == "measured"]
        return bool(measured) and settled(lambda g: g > start)(s)

    after = wait_status(kube_api, namespace, "chat", grown, "more GPUs", 120, operator)
    (entry,) = after["objectives"]["capacities"]
    assert entry["tensorParallel"] == 1
    assert entry["inFlight"] < entry["profileInFlight"]
    assert 0.1 <= entry["correction"] < 1
    assert "misses 11 ms" in entry["measurement"]
    reasons = event_reasons(kube_api, namespace, "chat")
    assert "CapacityCorrected" in reasons
