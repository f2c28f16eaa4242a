"""The API server rejects invalid LLMEndpoints with messages naming the field (schema + CEL)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.endpoints import create_endpoint

pytestmark = pytest.mark.control_plane

# Rejected objects are never stored, so the table shares the default namespace instead of
# paying for a fresh namespace per row.
NAMESPACE = "default"
MODEL = {"uri": "hf://org/model"}
STATIC = {"replicas": 1, "tensorParallel": 8}
AUTO = {"gpuBudget": 8}
OBJECTIVES = {
    "mode": "objectives",
    "objectives": {"tbtP50Ms": 25},
    "maxGPUs": 8,
    "profile": {"configMapKeyRef": {"name": "profile"}},
}

INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no-layout", {"model": MODEL}, ["exactly one of spec.layout and spec.autoscaling"]),
    (
        "both-layouts",
        {"model": MODEL, "layout": STATIC, "autoscaling": AUTO},
        ["exactly one of spec.layout and spec.autoscaling"],
    ),
    (
        "tp-not-power-of-two",
        {"model": MODEL, "layout": {"replicas": 1, "tensorParallel": 3}},
        ["spec.layout.tensorParallel", "power of two"],
    ),
    (
        "tp-not-dividing-node",
        {"model": MODEL, "gpu": {"perNode": 4}, "layout": {"replicas": 1, "tensorParallel": 8}},
        ["spec.layout.tensorParallel", "must divide spec.gpu.perNode"],
    ),
    (
        "budget-not-multiple",
        {"model": MODEL, "autoscaling": {"gpuBudget": 12}},
        ["spec.autoscaling.gpuBudget", "multiple"],
    ),
    (
        "candidates-ascending",
        {"model": MODEL, "autoscaling": {"gpuBudget": 8, "tensorParallelCandidates": [1, 8]}},
        ["spec.autoscaling.tensorParallelCandidates", "strictly descending"],
    ),
    (
        "candidate-not-power-of-two",
        {
            "model": MODEL,
            "gpu": {"perNode": 6},
            "autoscaling": {
                "gpuBudget": 6,
                "tensorParallelCandidates": [6],
                "concurrencyThresholds": [],
            },
        },
        ["spec.autoscaling.tensorParallelCandidates", "powers of two"],
    ),
    (
        "thresholds-descending",
        {
            "model": MODEL,
            "autoscaling": {
                "gpuBudget": 8,
                "tensorParallelCandidates": [8, 2, 1],
                "concurrencyThresholds": [64, 16],
            },
        },
        ["spec.autoscaling.concurrencyThresholds", "strictly ascending"],
    ),
    (
        "thresholds-count",
        {"model": MODEL, "autoscaling": {"gpuBudget": 8, "concurrencyThresholds": [16, 64]}},
        ["spec.autoscaling.concurrencyThresholds", "one entry fewer"],
    ),
    (
        "bad-uri-scheme",
        {"model": {"uri": "s3://bucket/model"}, "layout": STATIC},
        ["spec.model.uri", "hf://, pvc:// or /"],
    ),
    (
        "pvc-without-claim",
        {"model": {"uri": "pvc://"}, "layout": STATIC},
        ["spec.model.uri", "claim"],
    ),
    (
        "memory-fraction",
        {"model": MODEL, "engine": {"gpuMemoryUtilization": 1.5}, "layout": STATIC},
        ["spec.engine.gpuMemoryUtilization"],
    ),
    (
        "unknown-quantization",
        {"model": MODEL, "engine": {"quantization": "int3"}, "layout": STATIC},
        ["spec.engine.quantization", "Unsupported value"],
    ),
    (
        "tracing-sampling-ratio",
        {
            "model": MODEL,
            "layout": STATIC,
            "tracing": {"endpoint": "http://collector:4318", "samplingRatio": 1.5},
        },
        ["spec.tracing.samplingRatio", "less than or equal to 1"],
    ),
    (
        "routing-policy",
        {"model": MODEL, "gateway": {"routing": "random"}, "layout": STATIC},
        ["spec.gateway.routing"],
    ),
    (
        "zero-replicas",
        {"model": MODEL, "layout": {"replicas": 0, "tensorParallel": 8}},
        ["spec.layout.replicas"],
    ),
    (
        "hysteresis-one",
        {"model": MODEL, "autoscaling": {"gpuBudget": 8, "hysteresis": 1}},
        ["spec.autoscaling.hysteresis"],
    ),
    (
        "missing-model",
        {"layout": STATIC},
        ["spec.model", "Required value"],
    ),
    (
        "toleration-operator",
        {"model": MODEL, "layout": STATIC, "tolerations": [{"key": "a", "operator": "Equals"}]},
        ["spec.tolerations[0].operator", "Unsupported value"],
    ),
    (
        "gateway-toleration-effect",
        {
            "model": MODEL,
            "layout": STATIC,
            "gateway": {"tolerations": [{"key": "a", "effect": "NoScheduled"}]},
        },
        ["spec.gateway.tolerations[0].effect", "Unsupported value"],
    ),
    (
        "toleration-exists-with-value",
        {
            "model": MODEL,
            "layout": STATIC,
            "tolerations": [{"key": "a", "operator": "Exists", "value": "b"}],
        },
        ["spec.tolerations[0]", "operator Exists must not set value"],
    ),
    (
        "toleration-seconds-without-noexecute",
        {
            "model": MODEL,
            "layout": STATIC,
            "tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 30}],
        },
        ["spec.tolerations[0]", "tolerationSeconds requires effect NoExecute"],
    ),
    (
        "memory-not-a-quantity",
        {"model": MODEL, "layout": STATIC, "resources": {"requests": {"memory": "64 GB"}}},
        ["spec.resources.requests.memory"],
    ),
    (
        "gateway-cpu-not-a-quantity",
        {"model": MODEL, "layout": STATIC, "gateway": {"resources": {"limits": {"cpu": "two"}}}},
        ["spec.gateway.resources.limits.cpu"],
    ),
    (
        "gateway-workers-zero",
        {"model": MODEL, "layout": STATIC, "gateway": {"workers": 0}},
        ["spec.gateway.workers"],
    ),
    (
        "gateway-idle-deadline-zero",
        {"model": MODEL, "layout": STATIC, "gateway": {"deadlines": {"idleSeconds": 0}}},
        ["spec.gateway.deadlines.idleSeconds"],
    ),
    (
        "extra-args-tensor-parallel",
        {"model": MODEL, "layout": STATIC, "engine": {"extraArgs": {"tensor_parallel_size": 2}}},
        ["spec.engine.extraArgs.tensor_parallel_size is managed by the operator", "spec.layout"],
    ),
    (
        "extra-args-port-and-name",
        {
            "model": MODEL,
            "layout": STATIC,
            "engine": {"extraArgs": {"port": 1, "served_model_name": "x", "swap_space": 4}},
        },
        [
            "spec.engine.extraArgs.port is managed by the operator",
            "spec.engine.extraArgs.served_model_name is managed by the operator",
        ],
    ),
    (
        "extra-args-wrong-type",
        {"model": MODEL, "layout": STATIC, "engine": {"extraArgs": {"enable_prefix_caching": 1}}},
        ["spec.engine.extraArgs.enable_prefix_caching"],
    ),
    (
        "objectives-with-budget",
        {"model": MODEL, "autoscaling": {**OBJECTIVES, "gpuBudget": 8}},
        ["spec.autoscaling.gpuBudget applies to mode thresholds only"],
    ),
    (
        "objectives-without-max",
        {"model": MODEL, "autoscaling": {k: v for k, v in OBJECTIVES.items() if k != "maxGPUs"}},
        ["spec.autoscaling.maxGPUs is required in mode objectives"],
    ),
    (
        "objectives-min-above-max",
        {"model": MODEL, "autoscaling": {**OBJECTIVES, "minGPUs": 16}},
        ["spec.autoscaling.minGPUs must not exceed spec.autoscaling.maxGPUs"],
    ),
    (
        "objectives-scale-to-zero-with-min",
        {"model": MODEL, "autoscaling": {**OBJECTIVES, "minGPUs": 1, "scaleToZeroAfterSeconds": 9}},
        ["spec.autoscaling.scaleToZeroAfterSeconds needs minGPUs 0"],
    ),
    (
        "objectives-two-profiles",
        {
            "model": MODEL,
            "autoscaling": {
                **OBJECTIVES,
                "profile": {"configMapKeyRef": {"name": "p"}, "inline": {}},
            },
        },
        ["exactly one of spec.autoscaling.profile.configMapKeyRef and"],
    ),
    (
        "objectives-empty",
        {"model": MODEL, "autoscaling": {**OBJECTIVES, "objectives": {}}},
        ["spec.autoscaling.objectives"],
    ),
    (
        "thresholds-with-objectives-fields",
        {"model": MODEL, "autoscaling": {"gpuBudget": 8, "maxGPUs": 8}},
        ["apply to mode objectives only"],
    ),
    (
        "thresholds-without-budget",
        {"model": MODEL, "autoscaling": {"windowSeconds": 5}},
        ["spec.autoscaling.gpuBudget is required in mode thresholds"],
    ),
    (
        "extra-args-model",
        {"model": MODEL, "layout": STATIC, "engine": {"extraArgs": {"model": "/other"}}},
        ["spec.engine.extraArgs.model is managed by the operator: it is set from spec.model.uri"],
    ),
    (
        "embed-with-tool-parser",
        {"model": MODEL, "layout": STATIC, "task": "embed", "engine": {"toolCallParser": "hermes"}},
        ["spec.engine.toolCallParser has no use with spec.task embed"],
    ),
    (
        "unknown-task",
        {"model": MODEL, "layout": STATIC, "task": "classify"},
        ["spec.task", "Unsupported value"],
    ),
    (
        "extra-args-runner",
        {"model": MODEL, "layout": STATIC, "engine": {"extraArgs": {"runner": "pooling"}}},
        ["spec.engine.extraArgs.runner is managed by the operator: it is set from spec.task"],
    ),
]


@pytest.mark.parametrize(("name", "spec", "needles"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_endpoints_are_rejected_naming_the_field(
    kube_api: Any,
    llmep_crd: str,
    name: str,
    spec: dict[str, Any],
    needles: list[str],
) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as caught:
        create_endpoint(kube_api, NAMESPACE, name, spec)
    assert caught.value.status == 422, caught.value.body
    message = json.loads(caught.value.body or "{}")["message"]
    for needle in needles:
        assert needle in message, message


def test_a_long_name_is_rejected_naming_metadata_name(kube_api: Any, llmep_crd: str) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as caught:
        create_endpoint(kube_api, NAMESPACE, "x" * 41, {"model": MODEL, "layout": STATIC})
    assert caught.value.status == 422
    assert (
        "metadata.name must be at most 40 characters"
        in json.loads(caught.value.body or "{}")["message"]
    )


def test_valid_tolerations_quantities_and_extra_args_are_accepted(
    kube_api: Any, llmep_crd: str, namespace: str
) -> None:
    spec = {
        "model": MODEL,
        "layout": STATIC,
        "task": "embed",
        "engine": {"extraArgs": {"swap_space": 4, "kv_cache_dtype": "fp8", "tokenizer": "org/t"}},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"operator": "Exists"},
            {"key": "spot", "value": "yes", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "64Gi"}, "limits": {"cpu": 8}},
        "gateway": {"resources": {"requests": {"cpu": "0.5", "memory": "1e9"}}},
    }
    created = create_endpoint(kube_api, namespace, "accepted", spec)
    assert created["spec"]["engine"]["extraArgs"] == spec["engine"]["extraArgs"]  # type: ignore[index]
    assert created["spec"]["tolerations"] == spec["tolerations"]
    assert created["spec"]["task"] == "embed"
