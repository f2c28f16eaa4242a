"""The API server rejects invalid LLMEndpoints with messages naming the field (schema + CEL)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.control_plane.test_operator_harness import create_endpoint, llmep_crd

pytestmark = pytest.mark.control_plane

__all__ = ["llmep_crd"]

# Rejected objects are never stored, so the table shares the default namespace instead of
# paying for a fresh namespace per row.
NAMESPACE = "default"
MODEL = {"uri": "hf://org/model"}
STATIC = {"replicas": 1, "tensorParallel": 8}
AUTO = {"gpuBudget": 8}

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
